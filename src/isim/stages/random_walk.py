"""Stage ``random_walk``: the final ISIM model's CAMs (kept by its last round, or computed when
``cam.keep`` is false) walked over AffinityNet's affinities, decided by the rule that scores
best on the holdout images, refined with CRF (paper Table 7: ISIM+RW, ISIM+RW+CRF). Every
candidate rule's holdout mIoU, precision and recall go into ``summary.json`` (``rules``) and
MLflow; the walk's masks of the holdout images are scored too (``holdout``), as every ISIM
round's are, so the final segmenter can train on the best set (isim.pseudo.choice)."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from isim import settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.io import write_json
from isim.models import load_affinity
from isim.pseudo import masks
from isim.pseudo.cam import final_cams_or_model
from isim.pseudo.walk import RandomWalk, best_rule
from isim.run_layout import summary_path
from isim.runtime import setup
from isim.stages import remove_old_outputs
from isim.tracking import stage_run

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, isim_checkpoints: Path, isim_pseudo: Path, affinity_checkpoint: Path,
        out: Path) -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    model, cams = final_cams_or_model(cfg.cam.keep, isim_checkpoints, isim_pseudo, device)
    walker = RandomWalk(load_affinity(affinity_checkpoint, device), cfg.transform, cfg.affinity.radius,
                        cfg.random_walk, device)
    # the walk's scores carry their own background: the threshold is the rule's value, for the record
    made = settings.masks(cfg, threshold=walker.rule.value)
    made = replace(made, cam=replace(made.cam, source=cams))
    holdout = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction) if data.has_masks else []
    remove_old_outputs(out)
    with stage_run(cfg, "random_walk") as tr:
        rules = None
        if holdout:
            walker, rules = best_rule(model, data, holdout, walker, made.cam, made.workers, device)
            made = replace(made, threshold=walker.rule.value)
            for i, r in enumerate(rules):
                log.info("walk rule %-16s holdout mIoU %.2f (precision %.1f, recall %.1f)%s", r.rule, r.miou,
                         r.precision, r.recall, "  <- chosen" if i == 0 else "")
        elif len(walker.rules) > 1:
            log.warning("no holdout images with ground truth: the walk uses its first rule (%s) unchosen",
                        walker.rule.name)
        summary = masks.generate(model, data, data.ids("train"), out, made, device, "random walk", walker)
        summary.rule, summary.rules = walker.rule.name, rules
        if holdout:
            summary.holdout = masks.score(model, data, holdout, made, device, "random walk holdout", walker)
        write_json(summary_path(out), summary.to_json())
        tr.log_round(1, out, summary, data)
        if rules:
            for r in rules:
                tr.log_metrics({f"rule_{r.mode}_miou": r.miou, f"rule_{r.mode}_precision": r.precision,
                                f"rule_{r.mode}_recall": r.recall}, step=int(round(100 * r.value)))
            tr.log_params({"walk_rule": walker.rule.name})
    log.info("random walk (%s) -> %s: %s", walker.rule.name, out, summary.mious() or summary.images)
