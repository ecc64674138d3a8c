"""The one training engine of every trained model (CAM baseline, ISIM, AffinityNet, final
segmenter): SGD + poly LR over global batches, per-epoch seeds, AMP + GradScaler, channels_last,
torch.compile, torchrun/DDP with BatchNorm over the global batch, checkpoints and recovery after
kill -9. What differs between the models - the net, its parameter groups, what a batch's loss
is - comes in as a :class:`Task`."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from isim import distributed, metrics, runtime
from isim.data.datasets import TrainDataset
from isim.errors import IsimError
from isim.io import IGNORE
from isim.mask_scores import MaskSetSummary
from isim.models.encoder import train_mode
from isim.models.spec import ModelSpec
from isim.settings import Job
from isim.training.checkpoint import load_checkpoint, save_checkpoint
from isim.training.recovery import Recovery

log = logging.getLogger(__name__)


def loader_workers(asked: int) -> int:
    """``asked`` DataLoader workers, at most one per CPU this process may use: a preset sized for
    a GPU machine (VOC: 8) then runs on a laptop without PyTorch's warning and without
    oversubscribing its cores."""
    cpus = runtime.cpus()
    if asked > cpus:
        log.info("runtime.loader_workers %d > %d CPUs: %d DataLoader workers", asked, cpus, cpus)
    return min(asked, cpus)


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


class GlobalBatches(Sampler[list[int]]):
    """This rank's part of every global batch: one permutation per epoch (drawn from
    ``generator`` exactly as a shuffling DataLoader draws it), cut into batches of
    ``batch_size``, each split evenly over the ranks. The global batches are the same whatever
    the number of ranks, so results depend on it only through BatchNorm (``train.sync_bn``)
    and float noise; with one rank this is the plain shuffling loader."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise TrainingError(f"batch size {batch_size} (train, affinity or segmenter .batch_size) does not split "
                                f"evenly over {world} processes: make it a multiple of runtime.nproc x runtime.nnodes")
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


@dataclass
class EpochRecord:
    """One epoch, the same on every rank: its mean ``loss`` and wall time, and its other
    ``figures``: the task's means and counts (``Step``), the first parameter group's learning rate
    (``Task.lr_key``), the label accuracy where the task has logits (``train_*``), what the hooks
    add (ISIM's ``round``) and what a probe measured after it."""

    epoch: int
    loss: float
    seconds: float
    figures: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        """The flat form the plots CSV, MLflow and checkpoints keep."""
        return {"epoch": self.epoch, "loss": self.loss, **self.figures, "seconds": self.seconds}

    @classmethod
    def from_row(cls, row: dict[str, float]) -> EpochRecord:
        figures = {k: v for k, v in row.items() if k not in ("epoch", "loss", "seconds")}
        return cls(int(row["epoch"]), row["loss"], row["seconds"], figures)


@dataclass
class TrainingResult:
    """What training returns: the per-epoch records, the wall time, the trained model and (ISIM)
    every round's mask-set summary."""

    history: list[EpochRecord]
    seconds: float
    model: nn.Module
    rounds: list[MaskSetSummary] = field(default_factory=list)


@dataclass
class Step:
    """One batch's loss and what the epoch's record makes of it: ``means`` are averaged over the
    epoch's batches and the ranks, ``counts`` summed, ``logits`` (multi-label classification)
    scored against the batches' labels as ``train_*``."""

    loss: torch.Tensor
    means: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    logits: torch.Tensor | None = None


class Task:
    """The model-specific parts given to the :class:`Engine`: the model (what is saved and
    put in train mode), its spec and parameter groups, and :meth:`loss` of one batch.
    ``forward`` is what DistributedDataParallel and torch.compile wrap; :meth:`loss` calls it."""

    name = "model"      # the log lines' prefix
    lr_key = "lr"       # the record's name for the first parameter group's learning rate
    find_unused = False  # parameters that some steps leave without a gradient (DDP must know)

    def __init__(self, model: nn.Module, spec: ModelSpec, groups: list[dict]):
        self.model, self.spec, self.groups = model, spec, groups
        self.forward: nn.Module = model

    def loss(self, forward: Any, x: torch.Tensor, batch: dict[str, Any], device: torch.device) -> Step:
        raise NotImplementedError


class Hooks:
    """What a model's training adds to the engine's epoch loop (ISIM: its rounds of pseudo
    labels): work before each epoch, and state that recovery must keep beside the engine's."""

    def before_epoch(self, epoch: int) -> dict[str, Any]:
        """Called before training ``epoch`` (1-based); returns figures for the epoch's record."""
        return {}

    def state(self) -> dict[str, Any]:
        """Added to the engine's recovery state after every epoch."""
        return {}

    def restore(self, saved: dict[str, Any]) -> str:
        """Back from a recovery state written with :meth:`state`'s fields; returns what was
        restored, for the log line (e.g. " and 2 rounds")."""
        return ""


class Engine:
    """A :class:`Task`'s model with its optimizer, poly LR schedule, data and history.

    SGD keeps its real momentum (the schedule is a separate ``PolynomialLR``); shuffling and
    dropout draw from per-epoch seeds, so a run resumed from a checkpoint or a recovery state
    matches an uninterrupted one bit for bit on the CPU. Under torchrun every rank trains on its
    part of each global batch of ``batch_size`` and DistributedDataParallel averages the gradients.
    ``params`` (the whole params.yaml) travel with every checkpoint and must agree over the ranks.
    """

    def __init__(self, job: Job, task: Task, dataset: TrainDataset):
        settings, device, params = job.settings, job.device, job.params
        self.task, self.settings, self.dataset, self.device, self.params = task, settings, dataset, device, params
        self.model = task.model.to(device)
        self.generator = torch.Generator()
        sampler = GlobalBatches(len(dataset), settings.batch_size, self.generator, distributed.rank(),
                                distributed.world())
        self.loader = DataLoader(dataset, batch_sampler=sampler, num_workers=loader_workers(settings.loader_workers),
                                 generator=self.generator, pin_memory=device.type == "cuda")
        self.channels_last = settings.channels_last and device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward: Any = task.forward  # DDP- and compile-wrapped as the runtime asks
        if distributed.active():
            distributed.agree("params", params | {"runtime": None, "tracking": None})
            distributed.agree("training data", [dataset.ids, dataset.data.labels, dataset.data.classes])
            if settings.sync_bn:  # BatchNorm over the global batch: N ranks compute what one process does
                distributed.sync_batchnorm(self.model, device.type == "cuda")
            self.forward = nn.parallel.DistributedDataParallel(
                self.forward, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=task.find_unused)
        if settings.compile:
            self.forward = torch.compile(self.forward)
        groups = task.groups
        self.opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=settings.momentum,
                                   weight_decay=settings.weight_decay)
        self.sched = torch.optim.lr_scheduler.PolynomialLR(
            self.opt, total_iters=max(1, settings.epochs * len(self.loader)), power=settings.poly_power)
        self.amp = runtime.amp_dtype(settings.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.history: list[EpochRecord] = []

    def save(self, path: Any, epoch: int, round_: int = 0, trained_on: dict[str, Any] | None = None) -> None:
        save_checkpoint(path, self.task.spec, self.model, self.opt, self.sched, epoch, round_, self.rows(),
                        self.params, self.dataset.data.classes, trained_on)

    def resume(self, path: Any) -> dict[str, Any]:
        """Model, optimizer, schedule and history from a checkpoint; returns its contents."""
        state = load_checkpoint(path, self.model, self.task.spec)
        self.restore(state)
        return state

    def state(self, epoch: int, round_: int = 0) -> dict[str, Any]:
        """Everything training continues from (the recovery state)."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "history": self.rows(),
                "epoch": epoch, "round": round_}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history = [EpochRecord.from_row(r) for r in state["history"]]

    def rows(self) -> list[dict[str, float]]:
        return [r.row() for r in self.history]

    def step(self, batch: dict[str, Any], what: str = "") -> Step:
        """One optimisation step on ``batch``; returns the task's :class:`Step`."""
        x = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.task.loss(self.forward, x, batch, self.device)
        if not torch.isfinite(out.loss):
            parts = ", ".join(f"{k} {v:.4g}" for k, v in out.means.items())
            raise TrainingError(f"{self.task.name} {what}: loss is {out.loss.item()} ({parts}); "
                                "lower the learning rates")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return out

    def run_epoch(self, epoch: int, **extra: Any) -> EpochRecord:
        """Train one epoch (1-based); returns its record (also appended to ``history``)."""
        self.dataset.set_epoch(epoch)
        seed = self.settings.seed * 100003 + epoch
        self.generator.manual_seed(seed)  # the same global batches on every rank
        torch.manual_seed(seed + 7919 * distributed.rank())  # dropout differs per rank
        train_mode(self.model, self.settings.freeze_bn)
        t0 = time.perf_counter()
        means: dict[str, float] = {}
        counts: dict[str, int] = {}
        n_batches = 0
        logits, targets = [], []
        for batch in self.loader:
            out = self.step(batch, f"epoch {epoch}")
            for k, v in {"loss": out.loss.item(), **out.means}.items():
                means[k] = means.get(k, 0.0) + v
            for k, c in out.counts.items():
                counts[k] = counts.get(k, 0) + c
            if out.logits is not None:
                logits.append(out.logits.detach().float().cpu().numpy())
                targets.append(batch["label"].numpy())
            n_batches += 1
        # the epoch's figures over all ranks (each rank's mean over its equal part of every batch)
        totals = distributed.all_sum(np.array(list(means.values()))) / distributed.world()
        figures: dict[str, float] = {k: v / max(1, n_batches) for k, v in zip(means, totals.tolist())}
        loss = figures.pop("loss")
        figures.update(zip(counts, distributed.all_sum(np.array(list(counts.values()), dtype=np.int64)).tolist()))
        figures.update(**extra, **{self.task.lr_key: self.opt.param_groups[0]["lr"]})
        if logits:
            parts = distributed.gather((np.concatenate(logits), np.concatenate(targets)))
            figures.update({f"train_{k}": v for k, v in metrics.classification(
                np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])).items()})
        rec = EpochRecord(epoch, loss, round(time.perf_counter() - t0, 3), figures)
        self.history.append(rec)
        shown = " ".join([f"{k} {figures[k]:.4f}" for k in means if k != "loss"] +
                         ([f"label acc {figures['train_label_acc']:.1f}"] if logits else []))
        log.info("%s epoch %d/%d loss %.4f (%s) %.1fs", self.task.name, epoch, self.settings.epochs, loss, shown,
                 rec.seconds)
        return rec

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None, recovery: Recovery | None = None,
            measure: Callable[[], dict] | None = None, hooks: Hooks | None = None, start: int = 1,
            **extra: Any) -> list[EpochRecord]:
        """Epochs ``start`` to the last (``extra`` goes into every record); with ``recovery``,
        continue after the last epoch a killed run finished (its records are replayed to
        ``on_epoch``) and save the state after every epoch. ``measure()``: figures of the model
        after each epoch, added to its record before the record is saved or reported (rank 0
        only). ``hooks``: the model's own work before each epoch and its part of the state."""
        hooks = hooks or Hooks()
        if recovery is not None and (saved := recovery.load()) is not None:
            self.restore(saved)
            restored = hooks.restore(saved)
            start = saved["epoch"] + 1
            log.info("recovered an interrupted run from %s: %d epochs%s done, continuing at epoch %d",
                     recovery.root, saved["epoch"], restored, start)
            for rec in self.history:
                if on_epoch:
                    on_epoch(rec)
        for epoch in range(start, self.settings.epochs + 1):
            rec = self.run_epoch(epoch, **extra, **hooks.before_epoch(epoch))
            if measure is not None and distributed.is_main():
                rec.figures.update(measure())
            if recovery is not None and distributed.is_main():
                recovery.save(self.state(epoch) | hooks.state())
            if on_epoch:
                on_epoch(rec)
        return self.history
