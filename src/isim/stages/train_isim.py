"""Stage ``train_isim``: ISIM's rounds (Algorithm 1), every round's checkpoint and pseudo labels."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed, settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.stages import model_example, recovery_for, remove_old_outputs, train_stage, warn_if_photo_sized
from isim.stages.train_baseline import PLOT_KEYS
from isim.training.engine import TrainingResult
from isim.training.isim import train_isim

log = logging.getLogger(__name__)


def summarize(result: TrainingResult) -> dict:
    """The last epoch's label accuracy and the last round's mIoU, on train and (the tuning
    objective, measured the same way so a tuned run can be checked) on the holdout."""
    last = result.rounds[-1]
    out = {"rounds": len(result.rounds), "final_train_label_acc": result.history[-1].figures["train_label_acc"],
           **{f"final_{k}_miou": v for k, v in last.mious().items()}}
    if last.holdout is not None:
        out.update(final_holdout_raw_miou=last.holdout.raw_miou, final_holdout_crf_miou=last.holdout.crf_miou)
    return out


def run(cfg: Config, data_dir: Path, checkpoints: Path, pseudo: Path, metrics: Path, plots: Path,
        resume: Path | None = None, recovery_dir: Path | None = None) -> None:
    """``recovery_dir`` (outside the stage's outputs): a killed run continues from its last
    finished epoch when the stage runs again with the same params, code and data."""
    data = Prepared.open(data_dir)
    warn_if_photo_sized(cfg.transform, data)
    if resume is None and distributed.is_main():
        remove_old_outputs(checkpoints, pseudo)
    recovery = recovery_for(cfg, data, recovery_dir if resume is None else None)
    holdout = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction) if data.has_masks else None
    summary = train_stage(
        cfg, "train_isim", lambda on_epoch, tr: train_isim(
            *settings.isim(cfg), data, checkpoints, pseudo, resume=resume, holdout=holdout, recovery=recovery,
            on_epoch=on_epoch, on_round=lambda r, d, s: tr.log_round(r, d, s, data)),
        PLOT_KEYS, metrics, plots, recovery, summarize=summarize, headline=True,
        after=lambda tr, result: tr.log_model(result.model, "isim_model", model_example(cfg.transform.crop)))
    log.info("trained ISIM: %s", summary)
