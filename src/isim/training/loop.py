"""The epoch loop shared by the baseline and ISIM: model, SGD + poly LR, one epoch at a time."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from isim import distributed, metrics
from isim.config import Config
from isim.data.datasets import TrainDataset
from isim.data.layout import Prepared
from isim.errors import IsimError
from isim.io import IGNORE
from isim.models import build_model
from isim.models.encoder import train_mode
from isim.models.net import ISIMNet, Output
from isim.runtime import amp_dtype
from isim.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


class TrainingError(IsimError, RuntimeError):
    """Training cannot go on meaningfully (NaN loss, nothing to learn from)."""


def segmentation_loss(seg: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ignoring 255; images whose pseudo mask is all background contribute
    nothing at all (paper Eq. 2-3, as a real ignore rather than a zeroed logit)."""
    mask = mask.clone()
    mask[~valid] = IGNORE
    if distributed.active():
        # the mean over the global batch's labelled pixels: this rank's sum over all ranks' count,
        # times the rank count since DistributedDataParallel averages the ranks' gradients
        n = int(distributed.all_sum(np.array([int((mask != IGNORE).sum())]))[0])
        if n == 0:
            return seg.sum() * 0.0
        return F.cross_entropy(seg.float(), mask, ignore_index=IGNORE, reduction="sum") * (distributed.world() / n)
    if not bool((mask != IGNORE).any()):
        return seg.sum() * 0.0
    return F.cross_entropy(seg.float(), mask, ignore_index=IGNORE)


class MaskTraining:
    """What AffinityNet and the final segmenter share: the train split with masks from a folder
    (``transform`` augmentation, 255 padding), SGD + poly LR over ``epochs``, per-epoch seeds."""

    def __init__(self, cfg: Config, data: Prepared, masks_dir: Path, groups: list[dict], epochs: int,
                 batch_size: int, device: torch.device):
        self.cfg, self.device = cfg, device
        ids = data.ids("train")
        self.dataset = TrainDataset(data, ids, cfg.transform, seed=cfg.seed)
        self.dataset.set_pseudo(masks_dir)
        self.generator = torch.Generator()
        self.loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=True, drop_last=len(ids) > batch_size,
                                 num_workers=cfg.runtime.loader_workers, generator=self.generator,
                                 pin_memory=device.type == "cuda")
        tc = cfg.train
        self.opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=tc.momentum, weight_decay=tc.weight_decay)
        self.sched = torch.optim.lr_scheduler.PolynomialLR(self.opt, total_iters=max(1, epochs * len(self.loader)),
                                                           power=tc.poly_power)

    def batches(self, epoch: int):
        """The epoch's batches, shuffled and augmented from (seed, epoch) alone."""
        self.dataset.set_epoch(epoch)
        seed = self.cfg.seed * 100003 + epoch
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)
        return self.loader

    def step(self, loss: torch.Tensor, what: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(f"{what}: loss is {loss.item()}; lower the learning rate")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()


class GlobalBatches(Sampler[list[int]]):
    """This rank's part of every global batch: one permutation per epoch (drawn from
    ``generator`` exactly as a shuffling DataLoader draws it), cut into batches of
    ``batch_size``, each split evenly over the ranks. The global batches are the same whatever
    the number of ranks, so results depend on it only through BatchNorm (``train.sync_bn``)
    and float noise; with one rank this is the plain shuffling loader."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise TrainingError(f"train.batch_size={batch_size} does not split evenly over {world} processes: "
                                "make it a multiple of runtime.nproc x runtime.nnodes")
        if n < world:
            raise TrainingError(f"{n} training images cannot be shared by {world} processes")
        self.n, self.batch_size, self.generator, self.rank, self.world = n, batch_size, generator, rank, world
        self.drop_last = n > batch_size

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for b in range(len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield np.array_split(batch, self.world)[self.rank].tolist()


class _Forward(nn.Module):
    """The step's forward pass as one module call, so DistributedDataParallel sees it whether
    the epoch trains the classifier alone or the segmentation branch too."""

    def __init__(self, model: ISIMNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, joint: bool) -> Output:
        return self.model(x) if joint else self.model.classify(x)


class Trainer:
    """A model with its optimizer, poly LR schedule, data and loss history.

    SGD keeps its real momentum (the schedule is a separate ``PolynomialLR``); shuffling and
    dropout draw from per-epoch seeds, so a run resumed from a checkpoint matches an
    uninterrupted one bit for bit on the CPU. Under torchrun every rank trains on its part of
    each global batch of ``train.batch_size`` and DistributedDataParallel averages the gradients.
    """

    def __init__(self, cfg: Config, data: Prepared, spec: dict[str, Any], device: torch.device):
        self.cfg, self.spec, self.device, self.data = cfg, spec, device, data
        tc = cfg.train
        self.model = build_model(spec, cfg.encoder.pretrained, cfg.encoder.weights).to(device)
        self.ids = data.ids("train")
        self.dataset = TrainDataset(data, self.ids, cfg.transform, seed=cfg.seed)
        self.generator = torch.Generator()
        sampler = GlobalBatches(len(self.ids), tc.batch_size, self.generator, distributed.rank(), distributed.world())
        self.loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.runtime.loader_workers,
                                 generator=self.generator, pin_memory=device.type == "cuda")
        rt = cfg.runtime
        self.channels_last = rt.channels_last and device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward: Any = _Forward(self.model)  # DDP- and compile-wrapped as the runtime asks
        if distributed.active():
            distributed.agree("params", cfg.to_dict() | {"runtime": None, "tracking": None})
            distributed.agree("training data", [self.ids, data.labels, data.classes])
            if tc.sync_bn:  # BatchNorm over the global batch: N ranks compute what one process does
                distributed.sync_batchnorm(self.model, device.type == "cuda")
            self.forward = nn.parallel.DistributedDataParallel(
                self.forward, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.model.decoder is not None)  # warm-up epochs leave the decoder idle
        if rt.compile:
            self.forward = torch.compile(self.forward)
        # the baseline has no decoder: it neither reads nor depends on lr_decoder
        lr_decoder = cfg.lr_decoder if self.model.decoder is not None else 0.0
        self.opt = torch.optim.SGD(self.model.param_groups(cfg.lr_encoder, lr_decoder, cfg.lr_classifier),
                                   lr=cfg.lr_encoder, momentum=tc.momentum, weight_decay=tc.weight_decay)
        self.sched = torch.optim.lr_scheduler.PolynomialLR(
            self.opt, total_iters=max(1, tc.epochs * len(self.loader)), power=tc.poly_power)
        self.amp = amp_dtype(tc.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.history: list[dict] = []

    def save(self, path: Any, epoch: int, round_: int) -> None:
        save_checkpoint(path, self.spec, self.model, self.opt, self.sched, epoch, round_, self.history,
                        self.cfg.to_dict(), self.data.classes)

    def resume(self, path: Any) -> dict[str, Any]:
        """Model, optimizer, schedule and history from a checkpoint; returns its contents."""
        state = load_checkpoint(path, self.model, self.spec)
        self.restore(state)
        return state

    def state(self, epoch: int, round_: int) -> dict[str, Any]:
        """Everything training continues from (the recovery state)."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "history": self.history,
                "epoch": epoch, "round": round_}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])

    def step(self, batch: dict[str, Any], joint: bool, what: str = "") -> tuple[dict[str, float], np.ndarray, int]:
        """One optimisation step: (losses, logits, images without a usable pseudo mask)."""
        device = self.device
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        skipped = 0
        with torch.autocast(device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.forward(x, joint)
            loss_cls = F.multilabel_soft_margin_loss(out.logits.float(), y)
            loss = loss_cls
            loss_seg = torch.zeros((), device=device)
            if out.seg is not None:
                valid = batch["seg_valid"].to(device)
                skipped = int((~valid).sum())
                loss_seg = segmentation_loss(out.seg, batch["mask"].to(device), valid)
                loss = loss + loss_seg
        if not torch.isfinite(loss):
            raise TrainingError(f"{what}: loss is {loss.item()} (cls {loss_cls.item()}, "
                                f"seg {loss_seg.item()}); lower the learning rates")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        losses = {"loss": loss.item(), "loss_cls": loss_cls.item(), "loss_seg": loss_seg.item()}
        return losses, out.logits.detach().float().cpu().numpy(), skipped

    def run_epoch(self, epoch: int, round_: int = 0) -> dict[str, Any]:
        """Train one epoch (1-based): classification, plus segmentation once pseudo masks are set."""
        model, ds = self.model, self.dataset
        joint = ds.pseudo_dir is not None
        ds.set_epoch(epoch)
        seed = self.cfg.seed * 100003 + epoch
        self.generator.manual_seed(seed)  # the same global batches on every rank
        torch.manual_seed(seed + 7919 * distributed.rank())  # dropout differs per rank
        train_mode(model, self.cfg.encoder.freeze_bn)
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "loss_cls": 0.0, "loss_seg": 0.0}
        n_batches, seg_skipped = 0, 0
        all_logits, all_targets = [], []
        for batch in self.loader:
            losses, logits, skipped = self.step(batch, joint, f"epoch {epoch}")
            for k, v in losses.items():
                sums[k] += v
            seg_skipped += skipped
            n_batches += 1
            all_logits.append(logits)
            all_targets.append(batch["label"].numpy())
        # the epoch's figures over all ranks (each rank's mean over its equal part of every batch)
        totals = distributed.all_sum(np.array([sums["loss"], sums["loss_cls"], sums["loss_seg"]]))
        sums = dict(zip(("loss", "loss_cls", "loss_seg"), (totals / distributed.world()).tolist()))
        seg_skipped = int(distributed.all_sum(np.array([seg_skipped]))[0])
        parts = distributed.gather((np.concatenate(all_logits), np.concatenate(all_targets)))
        rec: dict[str, Any] = {k: v / max(1, n_batches) for k, v in sums.items()}
        rec.update(epoch=epoch, round=round_, seconds=round(time.perf_counter() - t0, 3),
                   seg_skipped_images=seg_skipped, lr_encoder=self.opt.param_groups[0]["lr"],
                   **{f"train_{k}": v for k, v in metrics.classification(
                       np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])).items()})
        self.history.append(rec)
        log.info("epoch %d/%d loss %.4f (cls %.4f seg %.4f) acc %.1f %.1fs", epoch, self.cfg.train.epochs,
                 rec["loss"], rec["loss_cls"], rec["loss_seg"], rec["train_label_acc"], rec["seconds"])
        return rec
