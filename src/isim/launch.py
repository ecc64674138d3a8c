"""A training stage on several processes: the stage's own command line run again under torchrun,
so dvc.yaml stays the same on one CPU, one GPU or eight (``runtime.nproc``, ``runtime.nnodes``).
Every cause that would make torchrun hang or fail late is checked here first."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import torch

from isim.config import RuntimeCfg
from isim.distributed import DistributedError

log = logging.getLogger(__name__)


def check(cfg: RuntimeCfg, nproc: int) -> None:
    """Refuse, naming the setting, what cannot run on this machine."""
    if nproc < 1:
        raise DistributedError(f"--nproc {nproc}: at least 1 process per node")
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.backend == "nccl" and not torch.cuda.is_available():
        raise DistributedError("runtime.backend=nccl needs CUDA, which this machine does not have; use gloo or auto")
    if cuda and nproc > torch.cuda.device_count():
        raise DistributedError(f"{nproc} processes per node but this machine has {torch.cuda.device_count()} GPU(s); "
                               "set runtime.nproc (or --nproc) to at most that")
    if cfg.nnodes > 1 and not cfg.rdzv_endpoint:
        raise DistributedError(f"runtime.nnodes={cfg.nnodes} needs runtime.rdzv_endpoint (host:port of node 0)")
    if cfg.rdzv_endpoint:
        reachable(cfg.rdzv_endpoint, min(cfg.dist_timeout_s, 30.0))


_PROBE = """
import datetime, sys
from torch.distributed import TCPStore
TCPStore(sys.argv[1], int(sys.argv[2]), is_master=False, timeout=datetime.timedelta(seconds=float(sys.argv[3])))
"""


def reachable(endpoint: str, timeout_s: float) -> None:
    """Node 0 hosts the rendezvous store; every other node must reach it. Checked with the store's
    own handshake (a bare TCP connect can succeed through a proxy that is not the store), in a
    child process so its retry messages stay quiet; retried while node 0 starts."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"runtime.rdzv_endpoint={endpoint!r}: expected host:port")
    try:
        local = socket.gethostbyname(host) in {"127.0.0.1", socket.gethostbyname(socket.gethostname())}
    except OSError as e:
        raise DistributedError(f"runtime.rdzv_endpoint={endpoint}: unknown host ({e})") from None
    if local:
        return  # this node starts the rendezvous itself
    r = subprocess.run([sys.executable, "-c", _PROBE, host, port, str(timeout_s)], capture_output=True, text=True,
                       env={**os.environ, "TORCH_CPP_LOG_LEVEL": "FATAL"})
    if r.returncode:
        why = (r.stderr.strip().splitlines() or ["no answer"])[-1][:300]
        raise DistributedError(f"runtime.rdzv_endpoint={endpoint}: unreachable for {timeout_s:.0f} s ({why}); "
                               "start node 0 first and check the address and firewall")


def torchrun(argv: list[str], cfg: RuntimeCfg, nproc: int) -> int:
    """Run ``isim <argv>`` as ``nproc`` processes per node; returns torchrun's exit status.
    Restarts (``runtime.max_restarts``) continue from the stage's recovery state."""
    check(cfg, nproc)
    if cfg.rdzv_endpoint:
        where = ["--nnodes", str(cfg.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", cfg.rdzv_endpoint,
                 "--rdzv-conf", f"join_timeout={int(cfg.dist_timeout_s)}"]
    else:
        where = ["--standalone"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *where,
           "--max-restarts", str(cfg.max_restarts), "-m", "isim.cli", *argv]
    log.info("launching %d processes per node x %d node(s): %s", nproc, cfg.nnodes, " ".join(cmd))
    return subprocess.call(cmd)
