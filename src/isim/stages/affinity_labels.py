"""Stage ``affinity_labels``: confident labels from the final ISIM model's CAMs (PSA)."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from isim import settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.pseudo import confident
from isim.pseudo.cam import final_cams_or_model
from isim.runtime import setup
from isim.stages import remove_old_outputs
from isim.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, isim_checkpoints: Path, isim_pseudo: Path, out: Path) -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    model, cams = final_cams_or_model(cfg.cam.keep, isim_checkpoints, isim_pseudo, device)
    remove_old_outputs(out)
    with stage_run(cfg, "affinity_labels") as tr:
        ac = cfg.affinity
        cam = replace(settings.cams(cfg), source=cams)
        summary = confident.generate(model, data, data.ids("train"), out, cam, cfg.crf,
                                           ac.fg_threshold, ac.bg_threshold, device, cfg.runtime.crf_workers)
        tr.log_metrics({k: summary[k] for k in ("labelled_share", "fg_share", "bg_share", "fg_precision",
                                                 "bg_precision") if k in summary}
                       | ({"labelled_miou": summary["labelled"]["miou"]} if "labelled" in summary else {}))
    log.info("affinity labels from %s -> %s: %.1f%% of pixels labelled (%.1f%% objects, %.1f%% background)%s",
             cams or isim_checkpoints, out, 100 * summary["labelled_share"], 100 * summary["fg_share"],
             100 * summary["bg_share"],
             f"; precision of objects {summary['fg_precision']:.1f}%, of background {summary['bg_precision']:.1f}%"
             if "labelled" in summary else "")
