"""Stage ``evaluate_segmenter``: the final model's mIoU on val (paper Tables 8-11), compared
with the best ISIM round's segmentation branch on the same photos. Writes which of the two
`isim predict` uses by default (``--best``), registers that one in MLflow's Model Registry
(``tracking.registered_model`` @ ``tracking.alias``), and warns loudly (log and MLflow) when the final
model scores below the masks it learnt from."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from isim import evaluation
from isim import run_layout as layout
from isim.config import Config
from isim.data.prepared import Prepared
from isim.inference import Candidate, ModelChoice
from isim.io import write_json
from isim.models import read_checkpoint
from isim.pseudo.choice import Choice
from isim.runtime import setup
from isim.tracking import stage_run

log = logging.getLogger(__name__)


KEEPS = 0.95  # published pipelines keep 0.91-1.03 of their masks' mIoU (IRN 66.5 -> 63.5, PSA 59.7 -> 61.7)


def collapse_warning(trained_on: Choice | None, holdout_miou: float | None, how: str = "") -> str | None:
    """The warning for a final model that keeps less than ``KEEPS`` of its training masks' mIoU
    (both on the holdout images), or None. ``how``: how the model's figure was made ("with CRF")."""
    masks_miou = trained_on.holdout_miou if trained_on is not None else None
    if trained_on is None or masks_miou is None or holdout_miou is None or holdout_miou >= KEEPS * masks_miou:
        return None
    return (f"the final segmenter scores {holdout_miou:.2f} mIoU{' ' + how if how else ''} on the holdout "
            f"images, {holdout_miou / max(masks_miou, 1e-9):.2f} of the "
            f"{trained_on.name} masks it learnt from ({masks_miou:.2f} on the same images; "
            f"below {KEEPS}): training on them lost accuracy instead of generalising it; check the segmenter's "
            "epochs, learning rates and segmenter.init (README \"After ISIM\")")


def served_tags(chosen: ModelChoice) -> dict[str, str]:
    """The registered version's tags: which model it is, its val mIoU, the other model's, and why."""
    tags = {"model": chosen.name, "checkpoint": chosen.checkpoint, "why": chosen.why}
    if chosen.miou is not None:
        tags["val_miou"] = f"{chosen.miou:.2f}"
    other = chosen.runner_up
    if other is not None:
        tags["other_model"] = other.name
        if other.miou is not None:
            tags["other_val_miou"] = f"{other.miou:.2f}"
    return tags


def run(cfg: Config, data_dir: Path, checkpoint: Path, metrics: Path, report_path: Path,
        isim_checkpoints: Path | None = None, isim_pseudo: Path | None = None, best: Path | None = None) -> None:
    data = Prepared.open(data_dir)
    device = setup(cfg.runtime)
    sc, rt = cfg.segmenter, cfg.runtime
    # the holdout images (part of val) are scored in the same pass, to set the model beside its masks
    on_val = data.has_masks and cfg.holdout.split == "val"
    holdout = data.holdout_ids("val", cfg.holdout.fraction) if on_val else []
    t0 = time.perf_counter()
    with stage_run(cfg, "evaluate_segmenter") as tr:
        seg = evaluation.evaluate_segmenter(checkpoint, data, "val", device, sc.crf, sc.scales,
                                             rt.cam_batch_size, rt.crf_workers, subset=holdout)
        report = seg.to_json()
        summary: dict = {"images": seg.images}
        for score, key in ((seg.raw, "val_miou"), (seg.crf, "val_crf_miou")):
            if score is not None:
                summary[key] = score.miou
                summary[key.replace("miou", "pixel_acc")] = score.pixel_acc
        trained_on = Choice.from_dict(read_checkpoint(checkpoint).get("trained_on") or {})
        report["trained_on"] = trained_on.to_dict() if trained_on is not None else {}
        # the masks it learnt from were refined with CRF: with segmenter.crf its own output is too
        kept = "holdout_crf_miou" if sc.crf else "holdout_miou"
        if seg.subset_miou:
            summary["holdout_miou"] = seg.subset_miou["raw"]
            if "crf" in seg.subset_miou:
                summary["holdout_crf_miou"] = seg.subset_miou["crf"]
            if trained_on is not None and trained_on.holdout_miou is not None:
                summary["trained_on_holdout_miou"] = trained_on.holdout_miou
                # what share of its masks' quality the model keeps on images neither was made from
                summary["keeps"] = round(summary[kept] / max(trained_on.holdout_miou, 1e-9), 4)
        warning = collapse_warning(trained_on, summary.get(kept), "with CRF" if sc.crf else "")
        if warning:
            log.warning("!" * 20 + " %s " + "!" * 20, warning)
            tr.warn(warning)
            report["warning"] = warning
        final = Candidate("final segmenter", str(checkpoint), summary.get("val_miou"))
        isim = None
        if isim_checkpoints is not None and isim_pseudo is not None:
            r, r_holdout = evaluation.best_round(isim_pseudo)
            ck = layout.round_checkpoint(isim_checkpoints, r)
            branch = evaluation.evaluate_segmenter(ck, data, "val", device, False, sc.scales,
                                                   rt.cam_batch_size, rt.crf_workers)
            miou = branch.raw.miou if branch.raw is not None else None
            isim = Candidate(f"ISIM round {r}", str(ck), miou, r_holdout)
            report["isim_round"] = {k: v for k, v in branch.to_json().items() if k != "raw"} | {
                "round": r, "miou": miou, "iou": branch.raw.iou if branch.raw is not None else None}
            if miou is not None:
                summary["isim_round_val_miou"] = miou
        chosen = evaluation.pick_model(final, isim)
        report["best_model"] = chosen.to_json()
        summary["best_is_segmenter"] = int(chosen.checkpoint == str(checkpoint))
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(report_path, report)
        write_json(metrics, summary)
        if best is not None:
            write_json(best, chosen.to_json())
        tr.log_metrics({k: v for k, v in summary.items() if k != "seconds"}, headline=True)
        tr.log_params({"best_model": chosen.name, "best_model_why": chosen.why})
        tr.log_served(Path(chosen.checkpoint), served_tags(chosen))
    log.info("final segmenter on val: %s; `isim predict` will use %s (%s)", summary, chosen.checkpoint, chosen.why)
