"""Stage ``pseudo_baseline`` (and any checkpoint): pseudo labels = CAMs + threshold + CRF.
Under torchrun (``--nproc``) every rank writes its share of the masks; rank 0 the summary."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from isim import distributed, settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.models import load_model
from isim.pseudo import masks
from isim.run_layout import cams_dir
from isim.runtime import setup
from isim.stages import remove_old_outputs
from isim.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: Config, checkpoint: Path, data_dir: Path, split: str, out: Path, stage: str = "pseudo") -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    model = load_model(checkpoint, device)
    if distributed.is_main():
        remove_old_outputs(out)
    distributed.barrier()
    with stage_run(cfg, stage) as tr:
        made = settings.masks(cfg, cfg.threshold)
        if cfg.cam.keep:  # the CAMs kept for evaluate's threshold sweep
            made = replace(made, cam=replace(made.cam, keep=cams_dir(out)))
        summary = masks.generate(model, data, data.ids(split), out, made, device)
        tr.log_round(1, out, summary, data)
    log.info("pseudo labels %s -> %s: %s", checkpoint, out,
             summary.mious() or summary.images)
