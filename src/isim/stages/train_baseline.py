"""Stage ``train_baseline``: the CAM baseline (classification only), its losses and checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed, settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.stages import model_example, recovery_for, train_stage, warn_if_photo_sized
from isim.training.baseline import train_baseline

log = logging.getLogger(__name__)
PLOT_KEYS = ("epoch", "round", "loss", "loss_cls", "loss_seg", "train_label_acc")  # ISIM's too


def run(cfg: Config, data_dir: Path, checkpoint: Path, metrics: Path, plots: Path,
        recovery_dir: Path | None = None) -> None:
    data = Prepared.open(data_dir)
    warn_if_photo_sized(cfg.transform, data)
    if distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    recovery = recovery_for(cfg, data, recovery_dir)
    summary = train_stage(
        cfg, "train_baseline", lambda on_epoch, tr: train_baseline(
            *settings.baseline(cfg), data, checkpoint, recovery=recovery, on_epoch=on_epoch),
        PLOT_KEYS, metrics, plots, recovery,
        summarize=lambda result: {"final_train_label_acc": result.history[-1].figures["train_label_acc"]},
        after=lambda tr, result: tr.log_model(result.model, "baseline_model", model_example(cfg.transform.crop)))
    log.info("trained the baseline: %s", summary)
