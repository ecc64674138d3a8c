"""Stage ``train_baseline``: the CAM baseline (classification only), its losses and checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed
from isim.config import Config
from isim.data.prepared import Prepared
from isim.io import write_csv, write_json
from isim.stages import model_example, recovery_for, warn_if_photo_sized
from isim.tracking import stage_run
from isim.training.baseline import train_baseline

log = logging.getLogger(__name__)
PLOT_KEYS = ("epoch", "round", "loss", "loss_cls", "loss_seg", "train_label_acc")


def write_history(history: list[dict], plots: Path) -> None:
    write_csv(plots, [{k: h[k] for k in PLOT_KEYS} for h in history])


def run(cfg: Config, data_dir: Path, checkpoint: Path, metrics: Path, plots: Path,
        recovery_dir: Path | None = None) -> None:
    data = Prepared.open(data_dir)
    warn_if_photo_sized(cfg.transform, data)
    if distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    recovery = recovery_for(cfg, data, recovery_dir)
    with stage_run(cfg, "train_baseline") as tr:
        result = train_baseline(cfg, data, checkpoint, recovery=recovery, on_epoch=lambda rec: tr.log_metrics(
            {k: v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"]))
        hist = result.history
        summary = {"epochs": len(hist), "seconds": round(result.seconds, 3), "final_loss": hist[-1]["loss"],
                   "final_train_label_acc": hist[-1]["train_label_acc"]}
        if distributed.is_main():  # rank 0 alone writes
            write_history(hist, plots)
            write_json(metrics, summary)
            tr.log_metrics(summary)
            tr.log_model(result.model, "baseline_model", model_example(cfg.transform.crop))
    if recovery is not None and distributed.is_main():  # every output is written: nothing left to recover
        recovery.clear()
    log.info("trained the baseline: %s", summary)
