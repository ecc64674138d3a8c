"""Stage ``evaluate``: CAM baseline vs ISIM rounds - the report, metrics and plots."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from isim import evaluation, settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.io import write_jpeg
from isim.models import load_model
from isim.run_layout import final_checkpoint
from isim.runtime import setup
from isim.tracking import stage_run
from isim.visualize import example_ids, rounds_grid

log = logging.getLogger(__name__)


def fig5(cfg: Config, data: Prepared, baseline_pseudo: Path, isim_pseudo: Path, rw_pseudo: Path | None):
    """Paper Fig. 5 from this run: ``eval.grid_images`` train images with objects of different
    classes, their ground truth (when the dataset has masks), then the CRF masks of the CAM
    baseline, every ISIM round and the random walk."""
    ids = example_ids(data, "train", cfg.eval.grid_images)
    return rounds_grid(data, ids, evaluation.fig5_columns(baseline_pseudo, isim_pseudo, rw_pseudo))


def run(cfg: Config, data_dir: Path, baseline_checkpoint: Path, baseline_pseudo: Path, isim_checkpoints: Path,
        isim_pseudo: Path, metrics: Path, report_path: Path, plots: Path, rw_pseudo: Path | None = None,
        figure: Path | None = None) -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    baseline = load_model(baseline_checkpoint, device)
    isim = load_model(final_checkpoint(isim_checkpoints), device)
    with stage_run(cfg, "evaluate") as tr:
        t0 = time.perf_counter()
        report = evaluation.evaluate(settings.sweep(cfg), data, baseline, baseline_pseudo, isim, isim_pseudo, device,
                                     rw_pseudo)
        report.seconds = round(time.perf_counter() - t0, 1)
        evaluation.write_outputs(report, metrics, report_path, plots)
        tr.log_evaluation(report)
        if figure is not None:
            grid = fig5(cfg, data, baseline_pseudo, isim_pseudo, rw_pseudo)
            write_jpeg(figure, grid, quality=90)
            tr.log_image(grid, "fig5.jpg")
        s = report.summary
        if "baseline_miou" in s:
            log.info("pseudo-mask mIoU on train: baseline %.2f, baseline+CRF %.2f, ISIM %.2f, ISIM+CRF %.2f "
                     "(gain %+.2f)%s", s["baseline_miou"], s["baseline_crf_miou"], s["isim_miou"], s["isim_crf_miou"],
                     s["gain"], f", ISIM+RW {s['isim_rw_miou']:.2f}, ISIM+RW+CRF {s['isim_rw_crf_miou']:.2f}"
                     if "isim_rw_miou" in s else "")
        else:
            log.info("no masks: label accuracy train/val: baseline %s/%s, ISIM %s/%s",
                     s.get("baseline_train_label_acc"), s.get("baseline_val_label_acc"),
                     s.get("isim_train_label_acc"), s.get("isim_val_label_acc"))
