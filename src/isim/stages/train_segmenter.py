"""Stage ``train_segmenter``: the final DeepLab model on the random-walk masks (after CRF),
registered in MLflow's Model Registry."""
from __future__ import annotations

import logging
from pathlib import Path

from isim.config import Config
from isim.data.layout import Prepared
from isim.stages import train_stage
from isim.training.segmenter import train_segmenter

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, masks: Path, checkpoint: Path, metrics: Path, plots: Path) -> None:
    data = Prepared.open(data_dir)
    checkpoint.unlink(missing_ok=True)
    summary = train_stage(cfg, "train_segmenter", lambda on_epoch: train_segmenter(
        cfg, data, masks, checkpoint, on_epoch=on_epoch), "segmenter", ("epoch", "loss", "skipped_images"),
        metrics, plots, after=lambda tr: tr.log_segmenter(checkpoint))
    log.info("trained the final segmenter: %s", summary)
