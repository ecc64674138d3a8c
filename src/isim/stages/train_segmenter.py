"""Stage ``train_segmenter``: the final DeepLab model on the random-walk masks (after CRF)."""
from __future__ import annotations

import logging
from pathlib import Path

from isim.config import Config
from isim.data.layout import Prepared
from isim.io import write_csv, write_json
from isim.tracking import stage_run
from isim.training.segmenter import train_segmenter

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, masks: Path, checkpoint: Path, metrics: Path, plots: Path) -> None:
    data = Prepared.open(data_dir)
    checkpoint.unlink(missing_ok=True)
    with stage_run(cfg, "train_segmenter") as tr:
        result = train_segmenter(cfg, data, masks, checkpoint, on_epoch=lambda rec: tr.log_metrics(
            {f"segmenter_{k}": v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"]))
        hist = result["history"]
        write_csv(plots, [{k: h[k] for k in ("epoch", "loss", "skipped_images")} for h in hist])
        summary = {"epochs": len(hist), "seconds": round(result["seconds"], 3), "final_loss": hist[-1]["loss"]}
        write_json(metrics, summary)
        tr.log_metrics(summary)
        tr.log_segmenter(checkpoint)
    log.info("trained the final segmenter: %s", summary)
