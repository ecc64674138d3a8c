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

from isim import distributed
from isim import run_layout as layout
from isim.config import Config
from isim.data.prepared import Prepared
from isim.io import write_json
from isim.mask_scores import MaskSetSummary
from isim.models import model_spec
from isim.models.net import ISIMNet
from isim.pseudo import masks
from isim.runtime import seed_everything, setup
from isim.training.baseline import cam_engine
from isim.training.engine import TrainingError, TrainingResult
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

    def due(self, epoch: int, history: list[dict]) -> bool:
        """Regenerate before training ``epoch`` (1-based)?"""
        if epoch <= self.warmup:
            return False
        if epoch == self.warmup + 1:
            return True
        if self.mode == "fixed":
            return (epoch - self.warmup - 1) % self.freq == 0
        # converge: the total loss changed by less than tol (relative) for `patience` epochs
        if len(history) >= 2:
            a, b = history[-2]["loss"], history[-1]["loss"]
            self.flat_epochs = self.flat_epochs + 1 if abs(a - b) <= self.tol * max(abs(a), 1e-8) else 0
        if self.flat_epochs >= self.patience:
            self.flat_epochs = 0
            return True
        return False


def train_isim(cfg: Config, data: Prepared, ckpt_dir: Path, pseudo_root: Path,
               on_epoch: Callable[[dict], None] | None = None,
               on_round: Callable[[int, Path, MaskSetSummary], None] | None = None,
               resume: Path | None = None, holdout: list[str] | None = None,
               recovery: Recovery | None = None) -> TrainingResult:
    """Train ISIM; ``resume`` continues from a round checkpoint, ``recovery`` from the last
    finished epoch of a killed run (both give the same result as an uninterrupted run). Every
    round also scores the pseudo masks of the ``holdout`` ids (``summary.holdout``, the
    tuning objective) without training on them."""
    seed_everything(cfg.seed)
    device = setup(cfg.runtime)
    engine = cam_engine(cfg, data, model_spec(cfg.encoder, cfg.model, data.n_classes), device)
    net = engine.model
    assert isinstance(net, ISIMNet)
    settings = masks.MaskSettings.of(cfg)  # how every round's pseudo labels are made
    rc, epochs = cfg.rounds, cfg.train.epochs
    schedule = Schedule(rc.warmup_epochs, cfg.crf_freq, rc.regen, rc.converge_tol, rc.converge_patience)
    rounds: list[MaskSetSummary] = []
    start, labels_done = 1, False
    if resume is not None:
        state = engine.resume(resume)
        start = state["epoch"] + 1
        for r in range(1, state["round"] + 1):
            summary_path = layout.summary_path(layout.round_dir(pseudo_root, r))
            if summary_path.is_file():
                rounds.append(layout.read_summary(summary_path.parent))
            elif r < state["round"]:
                raise TrainingError(f"{summary_path}: missing; round {r} is incomplete, resume from "
                                    f"{layout.round_checkpoint(ckpt_dir, r).name}")
        if rounds:
            engine.dataset.set_pseudo(layout.crf_dir(layout.round_dir(pseudo_root, len(rounds))))
        # the checkpoint was saved just before its round's labels were made: make them only if missing
        labels_done = len(rounds) == state["round"]
        log.info("resuming from %s: round %d, epoch %d", resume, len(rounds), start)
    elif recovery is not None and (saved := recovery.load()) is not None:
        engine.restore(saved)
        schedule.flat_epochs = saved["schedule_flat"]
        rounds = [MaskSetSummary.from_json(s) for s in saved["rounds"]]
        if distributed.is_main():
            recovery.restore_rounds(len(rounds), ckpt_dir, pseudo_root)
        distributed.barrier()
        if rounds:
            engine.dataset.set_pseudo(layout.crf_dir(layout.round_dir(pseudo_root, len(rounds))))
        start = saved["epoch"] + 1
        log.info("recovered an interrupted run from %s: %d epochs and %d rounds done, continuing at epoch %d",
                 recovery.root, saved["epoch"], len(rounds), start)
        for rec in engine.history:  # the tracking run of this attempt gets the whole story
            if on_epoch:
                on_epoch(rec)
        for r, summary in enumerate(rounds, 1):
            if on_round:
                on_round(r, layout.round_dir(pseudo_root, r), summary)
    t_start = time.perf_counter()

    def regenerate(epoch: int) -> None:
        r = len(rounds) + 1
        out = layout.round_dir(pseudo_root, r)
        partial = out.with_name(f".{out.name}.partial")
        for d in (partial, out):  # left by a killed run
            shutil.rmtree(d, ignore_errors=True)
        ckpt = layout.round_checkpoint(ckpt_dir, r)
        distributed.broadcast_module(engine.model)  # every rank's shard from rank 0's model
        if distributed.is_main():
            engine.save(ckpt, epoch, r)
        made = settings
        if epoch == epochs and cfg.cam.keep:  # the final model's CAMs, for the chain (run_layout.final_cams)
            made = replace(settings, cam=replace(settings.cam, keep=layout.cams_dir(partial)))
        summary = masks.generate(net, data, engine.dataset.ids, partial, made, device, f"round {r}")
        summary.round, summary.after_epoch = r, epoch
        if holdout:
            summary.holdout = masks.score(net, data, holdout, made, device, f"round {r} holdout")
        distributed.barrier()  # every shard written
        if distributed.is_main():
            write_json(layout.summary_path(partial), summary.to_json())
            partial.rename(out)
            if recovery is not None:
                recovery.keep_round(r, ckpt, out)
        distributed.barrier()  # no rank reads the round before it is complete
        rounds.append(summary)
        log.info("round %d (after epoch %d): mIoU %s, %d all-background masks", r, epoch, summary.mious(),
                 summary.crf_bg_only)
        if on_round:
            on_round(r, out, summary)
        bad = summary.crf_bg_only / max(1, summary.images)
        if bad >= rc.max_bad_pseudo:
            raise TrainingError(
                f"round {r} (after epoch {epoch}): {summary.crf_bg_only} of {summary.images} pseudo "
                "masks are all background; the classifier's CAMs never exceed the threshold. Train longer "
                "(rounds.warmup_epochs), lower `threshold`, or check the image-level labels")
        engine.dataset.set_pseudo(layout.crf_dir(out))

    for epoch in range(start, epochs + 1):
        if schedule.due(epoch, engine.history) and not (epoch == start and labels_done):
            regenerate(epoch - 1)
        rec = engine.run_epoch(epoch, round=len(rounds))
        if recovery is not None and distributed.is_main():
            recovery.save(engine.state(epoch, len(rounds)) | {"rounds": [s.to_json() for s in rounds],
                                                                "schedule_flat": schedule.flat_epochs})
        if on_epoch:
            on_epoch(rec)
    if not (rounds and rounds[-1].after_epoch == epochs):
        regenerate(epochs)  # the final model's pseudo labels: the run's result
    return TrainingResult(engine.history, time.perf_counter() - t_start, engine.model, rounds)
