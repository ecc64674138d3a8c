"""Stage ``random_walk``: the final ISIM model's CAMs walked over AffinityNet's affinities,
thresholded and refined with CRF (paper Table 7: ISIM+RW, ISIM+RW+CRF). The walk's masks of the
holdout images are scored too (``summary.json``'s ``holdout``), as every ISIM round's are, so the
final segmenter can train on the best set (isim.pseudo.choice)."""
from __future__ import annotations

import logging
from pathlib import Path

from isim.config import Config
from isim.data.layout import Prepared
from isim.io import write_json
from isim.models import load_affinity, load_model
from isim.pseudo import masks
from isim.pseudo.walk import RandomWalk
from isim.run_layout import final_checkpoint, summary_path
from isim.runtime import setup
from isim.stages import remove_old_outputs
from isim.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, isim_checkpoints: Path, affinity_checkpoint: Path, out: Path) -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    model = load_model(final_checkpoint(isim_checkpoints), device)
    walker = RandomWalk.of(load_affinity(affinity_checkpoint, device), cfg, device)
    settings = masks.MaskSettings.of(cfg, threshold=cfg.random_walk.bg_threshold)
    remove_old_outputs(out)
    with stage_run(cfg, "random_walk") as tr:
        summary = masks.generate(model, data, data.ids("train"), out, settings, device, "random walk", walker)
        if data.has_masks and (holdout := data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction)):
            summary.holdout = masks.score(model, data, holdout, settings, device, "random walk holdout", walker)
            write_json(summary_path(out), summary.to_json())
        tr.log_round(1, out, summary, data)
    log.info("random walk -> %s: %s", out,
             summary.mious() or summary.images)
