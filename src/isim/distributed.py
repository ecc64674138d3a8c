"""Several processes, one result: the process group that torchrun's environment describes, and
the few collective steps training and regeneration need. Without torchrun (or with one
process) every function here is the trivial single-process case, so method code calls them
unconditionally.

Rank 0 alone writes outputs, checkpoints and tracking records; every rank computes.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d, convert_sync_batchnorm

from isim.errors import IsimError

log = logging.getLogger(__name__)


class DistributedError(IsimError, RuntimeError):
    """The processes of a distributed run cannot work together."""


def launched() -> bool:
    """Started by torchrun (or an equivalent launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (the one that writes), also before the process group is joined."""
    return rank() == 0 if active() else rank_env() == 0


def init(device_name: str, backend: str, timeout_s: float) -> torch.device:
    """Join the process group torchrun describes; return this rank's device. ``backend``:
    auto (NCCL on CUDA, else gloo), gloo or nccl."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise DistributedError("runtime.backend=nccl needs CUDA, which this machine does not have; "
                               "use gloo (or auto)")
    if cuda:
        if local >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                                   "start at most that many processes per node")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        try:
            dist.init_process_group(backend, timeout=timeout, store=_store(timeout), rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]),
                                    device_id=device if backend == "nccl" else None)
        except Exception as e:  # noqa: BLE001 - any failure to meet the others is the same problem
            raise DistributedError(f"rank {os.environ.get('RANK')} could not join the process group at "
                                   f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                                   f"within {timeout_s:.0f} s: {e}") from None
    log.info("rank %d of %d on %s (%s)", rank(), world(), device, backend)
    return device


def _store(timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store of this attempt. torchrun's agent keeps one store across the restarts
    of ``--max-restarts``; the ranks' addresses of a dead attempt would still be in it, so every
    attempt gets its own key prefix."""
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(host, port, int(os.environ["WORLD_SIZE"]), is_master=not agent and rank_env() == 0,
                          timeout=timeout, multi_tenant=not agent)
    return dist.PrefixStore(f"isim/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def rank_env() -> int:
    return int(os.environ.get("RANK", "0"))


def agree(what: str, value: Any) -> None:
    """Every rank must hold the same ``value`` (params, data): fail naming the ranks that differ."""
    if not active():
        return
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
    digests: list[Any] = [None] * world()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise DistributedError(f"the ranks disagree on {what}: " + ", ".join(
            f"rank {r} {d}" for r, d in enumerate(digests)) + "; every node must run the same params and data")


def barrier() -> None:
    if active():
        dist.barrier()


def all_sum(x: np.ndarray) -> np.ndarray:
    """Element-wise sum over ranks (confusion matrices, counts)."""
    if not active():
        return x
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64 if x.dtype.kind == "f" else torch.int64)
    dist.all_reduce(t)
    return t.numpy().astype(x.dtype).reshape(x.shape)


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's weights and buffers (BatchNorm statistics drift apart per rank) onto every rank."""
    if active():
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def _global_norm(bn: torch.nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn``'s training-mode output with the statistics of the global batch: sums and counts are
    added up over the ranks with an autograd-aware all-reduce, mean first, then the centred squares
    (two passes, as stable as BatchNorm's own); the running statistics are updated as BatchNorm's."""
    from torch.distributed.nn.functional import all_reduce
    c = x.shape[1]
    count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
    total = all_reduce(torch.cat([x.sum((0, 2, 3)), count]))
    n = total[c]
    mean = total[:c] / n
    var = all_reduce((x - mean.view(1, c, 1, 1)).pow(2).sum((0, 2, 3))) / n
    tracked = bn.num_batches_tracked
    if bn.running_mean is not None and bn.running_var is not None and tracked is not None:
        with torch.no_grad():
            tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(tracked)
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * n / (n - 1), alpha=m)
    y = (x - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + bn.eps)
    return y * bn.weight.view(1, c, 1, 1) + bn.bias.view(1, c, 1, 1) if bn.affine else y


class GlobalBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, on any device (torch's
    SyncBatchNorm is CUDA-only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        return _global_norm(self, x)


class GlobalBatchNormAct(BatchNormAct2d):
    """timm's BatchNorm + activation (EfficientNet's layers) with global-batch statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        return self.act(self.drop(_global_norm(self, x)))


def sync_batchnorm(module: torch.nn.Module, cuda: bool) -> torch.nn.Module:
    """``module``, converted in place, with every BatchNorm2d, timm's BatchNormAct2d included,
    computing global-batch statistics: torch's / timm's SyncBatchNorm on CUDA, the Global* classes
    above elsewhere. The weights (the same Parameter objects: optimizer groups stay valid) and
    state-dict keys are kept; only the layers' classes change. ``module`` itself must not be a
    BatchNorm layer, so that every reference to it stays valid."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        raise DistributedError("sync_batchnorm converts a net's BatchNorm layers in place, not a lone layer")
    if cuda:
        converted = convert_sync_batchnorm(module)  # replaces the children, returns ``module``
        assert converted is module
        return module
    for child in module.modules():
        if type(child) is BatchNormAct2d:
            child.__class__ = GlobalBatchNormAct
        elif type(child) is torch.nn.BatchNorm2d:
            child.__class__ = GlobalBatchNorm
    return module


def shard(items: list[Any]) -> list[Any]:
    """This rank's share of ``items`` (every world()-th, starting at rank())."""
    return items[rank()::world()]


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
