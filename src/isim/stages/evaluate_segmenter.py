"""Stage ``evaluate_segmenter``: the final model's mIoU on val (paper Tables 8-11)."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import evaluation
from isim.config import Config
from isim.data.layout import Prepared
from isim.io import write_json
from isim.runtime import setup
from isim.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, checkpoint: Path, metrics: Path, report_path: Path) -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    with stage_run(cfg, "evaluate_segmenter") as tr:
        report = evaluation.evaluate_segmenter(checkpoint, data, "val", device, cfg.segmenter.crf,
                                                cfg.segmenter.scales, cfg.runtime.cam_batch_size,
                                                cfg.runtime.crf_workers)
        summary = {"images": report["images"]}
        for kind, key in (("raw", "val_miou"), ("crf", "val_crf_miou")):
            if kind in report:
                summary[key] = report[kind]["miou"]
                summary[key.replace("miou", "pixel_acc")] = report[kind]["pixel_acc"]
        write_json(report_path, report)
        write_json(metrics, summary)
        tr.log_metrics(summary, headline=True)
    log.info("final segmenter on val: %s", summary)
