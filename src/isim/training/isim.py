"""ISIM training, paper Algorithm 1.

``rounds.warmup_epochs`` of classification only; then pseudo labels are regenerated from the
model's own CAMs (threshold + dense CRF) - every ``crf_freq`` epochs, or when the losses have
converged - and training continues on classification + segmentation loss. Every round's
checkpoint and pseudo-label set are written as ``round_XX`` (a round folder is written beside
and renamed into place, so a half-written round is never read as complete); after the last
epoch one more round is generated from the final model (the run's result). With a
``Recovery``, a killed run continues from its last finished epoch (training/recovery.py).
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from isim import distributed
from isim import run_layout as layout
from isim.data.prepared import Prepared
from isim.io import write_json
from isim.mask_scores import MaskSetSummary
from isim.models.net import ISIMNet
from isim.pseudo import masks
from isim.runtime import seed_everything
from isim.settings import CamNet, Job, RoundSettings
from isim.training.baseline import cam_engine
from isim.training.engine import Engine, EpochRecord, Hooks, TrainingError, TrainingResult
from isim.training.recovery import Recovery

log = logging.getLogger(__name__)


@dataclass
class Schedule:
    """When to regenerate pseudo labels (fixed frequency, or on converged losses)."""

    warmup: int
    freq: int
    mode: str = "fixed"
    tol: float = 0.01
    patience: int = 2
    flat_epochs: int = field(default=0, init=False)  # consecutive epochs with a flat loss (recovery state)

    def due(self, epoch: int, history: list[EpochRecord]) -> bool:
        """Regenerate before training ``epoch`` (1-based)?"""
        if epoch <= self.warmup:
            return False
        if epoch == self.warmup + 1:
            return True
        if self.mode == "fixed":
            return (epoch - self.warmup - 1) % self.freq == 0
        # converge: the total loss changed by less than tol (relative) for `patience` epochs
        if len(history) >= 2:
            a, b = history[-2].loss, history[-1].loss
            self.flat_epochs = self.flat_epochs + 1 if abs(a - b) <= self.tol * max(abs(a), 1e-8) else 0
        if self.flat_epochs >= self.patience:
            self.flat_epochs = 0
            return True
        return False


class Rounds(Hooks):
    """ISIM's rounds inside the engine's epoch loop: before an epoch the schedule says is due, the
    model's own CAMs become the next pseudo labels (threshold + CRF) and the dataset trains on
    them; the rounds so far are part of the recovery state."""

    def __init__(self, engine: Engine, settings: RoundSettings, data: Prepared, ckpt_dir: Path, pseudo_root: Path,
                 holdout: list[str] | None, recovery: Recovery | None,
                 on_round: Callable[[int, Path, MaskSetSummary], None] | None):
        self.engine, self.data, self.device = engine, data, engine.device
        self.ckpt_dir, self.pseudo_root = ckpt_dir, pseudo_root
        self.holdout, self.recovery, self.on_round = holdout, recovery, on_round
        self.settings = settings.masks  # how every round's pseudo labels are made
        rc = settings.rounds
        self.keep_cams, self.epochs, self.max_bad = settings.keep_cams, engine.settings.epochs, rc.max_bad_pseudo
        self.schedule = Schedule(rc.warmup_epochs, settings.crf_freq, rc.regen, rc.converge_tol, rc.converge_patience)
        self.done: list[MaskSetSummary] = []
        self.skip_epoch = 0  # a resumed checkpoint's round is made already: not again before this epoch

    def resume(self, path: Path) -> int:
        """Continue from a round checkpoint: its rounds read back; returns the next epoch."""
        state = self.engine.resume(path)
        for r in range(1, state["round"] + 1):
            summary_path = layout.summary_path(layout.round_dir(self.pseudo_root, r))
            if summary_path.is_file():
                self.done.append(layout.read_summary(summary_path.parent))
            elif r < state["round"]:
                raise TrainingError(f"{summary_path}: missing; round {r} is incomplete, resume from "
                                    f"{layout.round_checkpoint(self.ckpt_dir, r).name}")
        self._train_on_last()
        # the checkpoint was saved just before its round's labels were made: make them only if missing
        if len(self.done) == state["round"]:
            self.skip_epoch = state["epoch"] + 1
        log.info("resuming from %s: round %d, epoch %d", path, len(self.done), state["epoch"] + 1)
        return state["epoch"] + 1

    def before_epoch(self, epoch: int) -> dict[str, Any]:
        if self.schedule.due(epoch, self.engine.history) and epoch != self.skip_epoch:
            self.regenerate(epoch - 1)
        return {"round": len(self.done)}

    def state(self) -> dict[str, Any]:
        return {"round": len(self.done), "rounds": [s.to_json() for s in self.done],
                "schedule_flat": self.schedule.flat_epochs}

    def restore(self, saved: dict[str, Any]) -> str:
        self.schedule.flat_epochs = saved["schedule_flat"]
        self.done = [MaskSetSummary.from_json(s) for s in saved["rounds"]]
        if distributed.is_main() and self.recovery is not None:
            self.recovery.restore_rounds(len(self.done), self.ckpt_dir, self.pseudo_root)
        distributed.barrier()
        self._train_on_last()
        for r, summary in enumerate(self.done, 1):  # the tracking run of this attempt gets the whole story
            if self.on_round:
                self.on_round(r, layout.round_dir(self.pseudo_root, r), summary)
        return f" and {len(self.done)} rounds"

    def _train_on_last(self) -> None:
        if self.done:
            self.engine.dataset.set_pseudo(layout.crf_dir(layout.round_dir(self.pseudo_root, len(self.done))))

    def regenerate(self, epoch: int) -> None:
        """Round ``len(done) + 1`` from the model after ``epoch``: checkpoint, masks, summary."""
        engine, r = self.engine, len(self.done) + 1
        out = layout.round_dir(self.pseudo_root, r)
        partial = out.with_name(f".{out.name}.partial")
        for d in (partial, out):  # left by a killed run
            shutil.rmtree(d, ignore_errors=True)
        ckpt = layout.round_checkpoint(self.ckpt_dir, r)
        distributed.broadcast_module(engine.model)  # every rank's shard from rank 0's model
        if distributed.is_main():
            engine.save(ckpt, epoch, r)
        made = self.settings
        if epoch == self.epochs and self.keep_cams:  # the final model's CAMs, for the chain (run_layout.final_cams)
            made = replace(made, cam=replace(made.cam, keep=layout.cams_dir(partial)))
        net = engine.model
        assert isinstance(net, ISIMNet)
        summary = masks.generate(net, self.data, engine.dataset.ids, partial, made, self.device, f"round {r}")
        summary.round, summary.after_epoch = r, epoch
        if self.holdout:
            summary.holdout = masks.score(net, self.data, self.holdout, made, self.device, f"round {r} holdout")
        distributed.barrier()  # every shard written
        if distributed.is_main():
            write_json(layout.summary_path(partial), summary.to_json())
            partial.rename(out)
            if self.recovery is not None:
                self.recovery.keep_round(r, ckpt, out)
        distributed.barrier()  # no rank reads the round before it is complete
        self.done.append(summary)
        log.info("round %d (after epoch %d): mIoU %s, %d all-background masks", r, epoch, summary.mious(),
                 summary.crf_bg_only)
        if self.on_round:
            self.on_round(r, out, summary)
        if summary.crf_bg_only / max(1, summary.images) >= self.max_bad:
            raise TrainingError(
                f"round {r} (after epoch {epoch}): {summary.crf_bg_only} of {summary.images} pseudo "
                "masks are all background; the classifier's CAMs never exceed the threshold. Train longer "
                "(rounds.warmup_epochs), lower `threshold`, or check the image-level labels")
        engine.dataset.set_pseudo(layout.crf_dir(out))


def train_isim(job: Job, net: CamNet, rounds_settings: RoundSettings, data: Prepared, ckpt_dir: Path,
               pseudo_root: Path, on_epoch: Callable[[EpochRecord], None] | None = None,
               on_round: Callable[[int, Path, MaskSetSummary], None] | None = None,
               resume: Path | None = None, holdout: list[str] | None = None,
               recovery: Recovery | None = None) -> TrainingResult:
    """Train ISIM; ``resume`` continues from a round checkpoint, ``recovery`` from the last
    finished epoch of a killed run (both give the same result as an uninterrupted run). Every
    round also scores the pseudo masks of the ``holdout`` ids (``summary.holdout``, the
    tuning objective) without training on them."""
    seed_everything(job.settings.seed)
    engine = cam_engine(job, net, data)
    rounds = Rounds(engine, rounds_settings, data, ckpt_dir, pseudo_root, holdout, recovery, on_round)
    start = rounds.resume(resume) if resume is not None else 1
    t_start = time.perf_counter()
    engine.fit(on_epoch, recovery, hooks=rounds, start=start)
    epochs = job.settings.epochs
    if not (rounds.done and rounds.done[-1].after_epoch == epochs):
        rounds.regenerate(epochs)  # the final model's pseudo labels: the run's result
    return TrainingResult(engine.history, time.perf_counter() - t_start, engine.model, rounds.done)
