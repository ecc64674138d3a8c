"""Stage ``train_isim``: ISIM's rounds (Algorithm 1), every round's checkpoint and pseudo labels."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed
from isim.config import Config
from isim.data.prepared import Prepared
from isim.io import write_json
from isim.stages import model_example, recovery_for, remove_old_outputs, warn_if_photo_sized
from isim.stages.train_baseline import write_history
from isim.tracking import stage_run
from isim.training.isim import train_isim

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, checkpoints: Path, pseudo: Path, metrics: Path, plots: Path,
        resume: Path | None = None, recovery_dir: Path | None = None) -> None:
    """``recovery_dir`` (outside the stage's outputs): a killed run continues from its last
    finished epoch when the stage runs again with the same params, code and data."""
    data = Prepared.open(data_dir)
    warn_if_photo_sized(cfg.transform, data)
    if resume is None and distributed.is_main():
        remove_old_outputs(checkpoints, pseudo)
    recovery = recovery_for(cfg, data, recovery_dir if resume is None else None)
    with stage_run(cfg, "train_isim") as tr:
        holdout = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction) if data.has_masks else None
        result = train_isim(cfg, data, checkpoints, pseudo, resume=resume, holdout=holdout, recovery=recovery,
                            on_epoch=lambda rec: tr.log_metrics(
                                {k: v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"]),
                            on_round=lambda r, d, s: tr.log_round(r, d, s, data))
        hist = result.history
        summary = {"epochs": len(hist), "rounds": len(result.rounds), "seconds": round(result.seconds, 3),
                   "final_loss": hist[-1]["loss"], "final_train_label_acc": hist[-1]["train_label_acc"]}
        last = result.rounds[-1]
        summary.update({f"final_{k}_miou": v for k, v in last.mious().items()})
        if last.holdout is not None:  # the tuning objective, measured the same way so a tuned run can be checked
            summary.update(final_holdout_raw_miou=last.holdout.raw_miou, final_holdout_crf_miou=last.holdout.crf_miou)
        if distributed.is_main():  # rank 0 alone writes
            write_history(hist, plots)
            write_json(metrics, summary)
            tr.log_metrics(summary, headline=True)
            tr.log_model(result.model, "isim_model", model_example(cfg.transform.crop))
    if recovery is not None and distributed.is_main():  # every output is written: nothing left to recover
        recovery.clear()
    log.info("trained ISIM: %s", summary)
