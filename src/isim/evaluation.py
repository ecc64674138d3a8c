"""Evaluation (paper Tables 2-5 shape): pseudo-mask mIoU of every round with and without CRF,
CAM mIoU over a threshold sweep, classification accuracy on train and val.

Every pseudo-mask set was scored against the ground truth when it was written (its
``summary.json``: the same masks a user gets with ``dvc get``), so evaluation reads those scores;
CAM sweeps and accuracy come from the final checkpoints.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from isim import metrics
from isim import run_layout as layout
from isim.config import CrfCfg
from isim.data.prepared import Prepared
from isim.io import DataError, read_image, write_csv, write_json, write_text
from isim.mask_scores import MaskSetSummary, Score
from isim.models.net import ISIMNet
from isim.pseudo import cam as camlib
from isim.pseudo import pool
from isim.pseudo.masks import Truth
from isim.settings import Sweep

if TYPE_CHECKING:  # the inference code runs only where a segmenter is scored (not in the evaluate stage)
    from isim.inference import Candidate, ModelChoice


@dataclass
class CamReport:
    """One model's CAMs: multi-label accuracy per split (metrics.classification) and, with masks,
    the CAM mIoU (no CRF) on train at every ``eval.thresholds`` value."""

    classification: dict[str, dict[str, float]] = field(default_factory=dict)  # "train" / "val" -> figures
    threshold_sweep: list[dict[str, float]] = field(default_factory=list)      # [{"threshold", "miou"}]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{split}_classification": c for split, c in self.classification.items()}
        return out | ({"threshold_sweep": self.threshold_sweep} if self.threshold_sweep else {})


def _scores(summary: MaskSetSummary) -> dict[str, Any]:
    return {k: asdict(score) for k, score in (("raw", summary.raw), ("crf", summary.crf)) if score is not None}


@dataclass
class EvaluationReport:
    """``reports/evaluation.json``: the CAM baseline against ISIM's rounds (and the walk), every
    mask set as its own ``summary.json`` scored it when it was made; ``summary`` holds the
    comparison's figures (``metrics/eval.json``)."""

    classes: list[str]
    baseline: CamReport
    isim: CamReport
    summary: dict[str, float | None]
    baseline_masks: MaskSetSummary | None = None
    rounds: list[MaskSetSummary] = field(default_factory=list)
    random_walk: MaskSetSummary | None = None
    chain: dict[str, Any] | None = None
    note: str = ""
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classes": self.classes, "baseline": self.baseline.to_json(),
                               "isim": self.isim.to_json(), "summary": self.summary}
        if self.baseline_masks is not None:
            out["baseline"]["pseudo"] = _scores(self.baseline_masks)
        if self.rounds:
            out["isim"]["rounds"] = [{"round": r.round, **_scores(r)} for r in self.rounds]
        if self.random_walk is not None:
            out["random_walk"] = _scores(self.random_walk)
        for key in ("chain", "note", "seconds"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class SweepScorer:
    """One image's CAM masks at every threshold against its truth: a pool job (no truth: nothing)."""
    thresholds: tuple[float, ...]
    truth: Truth

    def __call__(self, id_: str, rgb: np.ndarray, maps: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
        gt = self.truth.read(id_, rgb.shape[:2])
        if gt is None:
            return []
        return [metrics.confusion(keys[camlib.to_mask(maps, keys, t)], gt, self.truth.n) for t in self.thresholds]


@torch.no_grad()
def sweep_and_accuracy(model: ISIMNet, data: Prepared, sweep: Sweep, device: torch.device,
                       train_cams: Path | None = None) -> CamReport:
    """CAM mIoU (no CRF) at every eval threshold on train; classification accuracy on train/val.
    ``train_cams``: the model's CAMs of the train images, kept when its masks were made."""
    n = data.n_classes
    thresholds = sweep.thresholds
    confs = [np.zeros((n, n), np.int64) for _ in thresholds]
    out = CamReport()
    for split in ("train", "val"):
        ids = data.ids(split)
        if not ids:
            continue
        cam = sweep.cam
        swept = split == "train" and data.has_masks
        if split == "train" and train_cams is not None:
            cam = replace(cam, source=train_cams)
        elif not swept:  # accuracy alone: the scale-1.0 logits
            cam = replace(cam, scales=[1.0])
        task = SweepScorer(thresholds, Truth(data if swept else None))
        logits, targets = [], []
        for found, lg, label in camlib.map_cams(model, data, ids, cam, device, task, sweep.workers,
                                                f"evaluate {split}"):
            logits.append(lg)
            targets.append(label)
            for c, f in zip(confs, found):
                c += f
        out.classification[split] = metrics.classification(np.stack(logits), np.stack(targets))
    if data.has_masks:
        out.threshold_sweep = [{"threshold": t, "miou": metrics.summary(c, data.classes)["miou"]}
                               for t, c in zip(thresholds, confs)]
    return out


def fig5_columns(baseline_pseudo: Path, isim_pseudo: Path, rw_pseudo: Path | None = None) -> list[tuple[str, Path]]:
    """Paper Fig. 5's columns after the image and its truth: the CRF masks of the CAM baseline,
    of every ISIM round and of the random walk, each with its name."""
    cols = [("CAM baseline", layout.crf_dir(baseline_pseudo))] + [
        (f"ISIM round {layout.round_number(r)}", layout.crf_dir(r)) for r in layout.rounds_of(isim_pseudo)]
    return cols + ([("ISIM+RW", layout.crf_dir(rw_pseudo))] if rw_pseudo is not None else [])


def evaluate(sweep: Sweep, data: Prepared, baseline_model: ISIMNet, baseline_pseudo: Path,
             isim_model: ISIMNet, isim_pseudo: Path, device: torch.device,
             rw_pseudo: Path | None = None) -> EvaluationReport:
    """The comparison: CAM baseline vs ISIM rounds (and the random walk of the final round's
    CAMs when ``rw_pseudo`` is given), pseudo masks before (raw) and after CRF, each set's scores
    read from its ``summary.json`` (made from the masks it wrote, against the same ground truth)."""
    baseline = sweep_and_accuracy(baseline_model, data, sweep, device,
                                  layout.kept_cams(baseline_pseudo) if sweep.kept else None)
    isim = sweep_and_accuracy(isim_model, data, sweep, device, layout.final_cams(isim_pseudo) if sweep.kept else None)
    summary: dict[str, float | None] = {
        f"{name}_{split}_label_acc": part.classification.get(split, {}).get("label_acc")
        for name, part in (("baseline", baseline), ("isim", isim)) for split in ("train", "val")}
    report = EvaluationReport(data.classes, baseline, isim, summary)
    if not data.has_masks:
        report.note = "dataset has no masks: only classification accuracy is reported"
        return report
    report.baseline_masks = layout.read_summary(baseline_pseudo)
    report.rounds = [layout.read_summary(r) for r in layout.rounds_of(isim_pseudo)]
    base, final = _scored(report.baseline_masks, baseline_pseudo), _scored(report.rounds[-1], isim_pseudo)
    summary.update({
        "baseline_miou": base[0].miou, "baseline_crf_miou": base[1].miou,
        "isim_miou": final[0].miou, "isim_crf_miou": final[1].miou,
        "gain": round(final[0].miou - base[0].miou, 3), "gain_crf": round(final[1].miou - base[1].miou, 3),
        # why the masks change: object precision / recall of the CRF masks (metrics.object_precision_recall)
        "baseline_crf_precision": base[1].precision, "baseline_crf_recall": base[1].recall,
        "isim_crf_precision": final[1].precision, "isim_crf_recall": final[1].recall})
    if rw_pseudo is not None:  # paper Table 7: ISIM+RW and ISIM+RW+CRF
        report.random_walk = layout.read_summary(rw_pseudo)
        rw = _scored(report.random_walk, rw_pseudo)
        summary.update(isim_rw_miou=rw[0].miou, isim_rw_crf_miou=rw[1].miou,
                       gain_rw=round(rw[0].miou - final[0].miou, 3), gain_rw_crf=round(rw[1].miou - final[1].miou, 3),
                       isim_rw_crf_precision=rw[1].precision, isim_rw_crf_recall=rw[1].recall)
        report.chain = chain_on_holdout(layout.rounds_of(isim_pseudo)[-1], rw_pseudo)
    return report


def _scored(summary: MaskSetSummary, where: Path) -> tuple[Score, Score]:
    if summary.raw is None or summary.crf is None:
        raise DataError(f"{layout.summary_path(where)}: the mask set was not scored against ground truth "
                        "(made by an older release?): rerun the stage that made it")
    return summary.raw, summary.crf


def chain_on_holdout(last_round: Path, rw_pseudo: Path) -> dict:
    """The walk as the random_walk stage decided it: every candidate rule's holdout mIoU, precision
    and recall (before CRF), the rule chosen, and the holdout mIoU of the walk's masks beside the
    final ISIM round's (the images never trained on)."""
    walk, isim = layout.read_summary(rw_pseudo), layout.holdout_scores(last_round)
    out: dict = {"walk_rule": walk.rule, "walk_rules": [asdict(r) for r in walk.rules or []]}
    if walk.holdout is not None and isim is not None:
        out["holdout"] = {"isim": isim.raw_miou, "isim_crf": isim.crf_miou,
                          "isim_rw": walk.holdout.raw_miou, "isim_rw_crf": walk.holdout.crf_miou}
    return out


def compact(report: EvaluationReport) -> dict:
    """metrics/eval.json: the comparison's figures and the stage's seconds (details stay in the
    report; the run's headline is the headline stage's)."""
    out: dict = {"summary": report.summary}
    if report.seconds is not None:
        out["seconds"] = report.seconds
    for name, part in (("baseline", report.baseline), ("isim", report.isim)):
        out[name] = {f"{split}_classification": c for split, c in part.classification.items()}
    scored = [(r.round or i, r.raw, r.crf) for i, r in enumerate(report.rounds, 1)
              if r.raw is not None and r.crf is not None]
    if scored:
        out["rounds"] = {layout.round_name(i): {
            "isim": raw.miou, "isim_crf": crf.miou, "precision": raw.precision, "recall": raw.recall,
            "crf_precision": crf.precision, "crf_recall": crf.recall} for i, raw, crf in scored}
    return out


def write_outputs(report: EvaluationReport, metrics_path: Path, report_path: Path, plots_dir: Path) -> None:
    write_json(report_path, report.to_json())
    write_json(metrics_path, compact(report))
    if not report.rounds or report.baseline_masks is None:  # no masks: no mIoU, but the declared plot files exist
        write_text(plots_dir / "rounds.csv", "round,isim,isim_crf,baseline,baseline_crf,recall,precision\n")
        write_text(plots_dir / "thresholds.csv", "threshold,baseline,isim\n")
        return
    base = report.baseline_masks
    assert base.raw is not None and base.crf is not None  # scored: the report has rounds
    write_csv(plots_dir / "rounds.csv", [
        {"round": r.round, "isim": r.raw.miou, "isim_crf": r.crf.miou, "baseline": base.raw.miou,
         "baseline_crf": base.crf.miou, "recall": r.crf.recall, "precision": r.crf.precision}
        for r in report.rounds if r.raw is not None and r.crf is not None])
    if report.baseline.threshold_sweep:
        write_csv(plots_dir / "thresholds.csv", [
            {"threshold": a["threshold"], "baseline": a["miou"], "isim": b["miou"]}
            for a, b in zip(report.baseline.threshold_sweep, report.isim.threshold_sweep)])


@dataclass
class SegmenterReport:
    """A segmentation model (the final segmenter, or an ISIM round's segmentation branch) on one
    split against the ground truth, before and (``crf``) after dense CRF; ``subset_miou``: the
    mIoU of the ``subset`` ids alone (the holdout images) by kind."""

    split: str
    images: int
    arch: str = ""
    raw: Score | None = None
    crf: Score | None = None
    subset_images: int = 0
    subset_miou: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": self.split, "images": self.images}
        out |= {"arch": self.arch} if self.arch else {}
        out |= {kind: asdict(s) for kind, s in (("raw", self.raw), ("crf", self.crf)) if s is not None}
        if self.subset_miou:
            out["subset"] = {"images": self.subset_images, **{k: {"miou": v} for k, v in self.subset_miou.items()}}
        return out | ({"note": self.note} if self.note else {})


def evaluate_segmenter(checkpoint: Path, data: Prepared, split: str, device: torch.device, crf: bool,
                       scales: list[float], batch_size: int = 8, workers: int = 0,
                       subset: list[str] | None = None) -> SegmenterReport:
    """The final segmenter (or an ISIM round's segmentation branch) on ``split`` against ground
    truth (paper Tables 8-11: val mIoU), with the inference ``isim predict`` runs (multi-scale +
    flip, equal-size images batched), and after dense CRF when ``crf`` (in ``workers`` processes
    while the model segments the next images). ``subset``: those ids are also scored on their
    own (``report["subset"]``), in the same pass."""
    from isim.inference import Predictor
    ids = data.ids(split)
    if not data.has_masks or not ids:
        return SegmenterReport(split, len(ids), note="no ground-truth masks on this split: nothing to score")
    predictor = Predictor(checkpoint, device, scales)
    n = data.n_classes
    kinds = ("raw", "crf") if crf else ("raw",)
    conf = {k: np.zeros((n, n), np.int64) for k in kinds}
    sub_conf = {k: np.zeros((n, n), np.int64) for k in kinds}
    inside = set(subset or ())
    images = ((id_, read_image(data.image_path(id_))) for id_ in ids)
    jobs = predictor.segment_all(images, batch_size)
    for id_, part in pool.imap(SegmenterScorer(Truth(data), predictor.crf_cfg if crf else None), jobs, workers):
        for kind, c in part.items():
            conf[kind] += c
            if id_ in inside:
                sub_conf[kind] += c
    out = SegmenterReport(split, len(ids), predictor.arch)
    out.raw, out.crf = (Score.from_json({**metrics.summary(conf[k], data.classes), "confusion": conf[k].tolist()})
                        if k in conf else None for k in ("raw", "crf"))
    if subset:
        out.subset_images = len(inside & set(ids))
        out.subset_miou = {kind: metrics.summary(sub_conf[kind], data.classes)["miou"] for kind in kinds}
    return out


@dataclass(frozen=True)
class SegmenterScorer:
    """One image's confusion matrices, before and after CRF: a pool worker's task."""
    truth: Truth
    crf_cfg: CrfCfg | None

    def __call__(self, id_: str, rgb: np.ndarray, mask: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
        from isim.inference import refine
        gt = self.truth.read(id_, mask.shape)
        assert gt is not None  # only datasets with masks are scored
        out = {"raw": metrics.confusion(mask, gt, self.truth.n)}
        if self.crf_cfg is not None:
            out["crf"] = metrics.confusion(refine(rgb, mask, self.crf_cfg), gt, self.truth.n)
        return id_, out


def best_round(isim_pseudo: Path) -> tuple[int, float | None]:
    """The ISIM round whose CRF masks score best on the holdout images (the last round when no
    round was scored), and that score. Round 1 competes only when it is the only one: its model
    made the first masks after the classification warm-up, so its segmentation branch never trained."""
    rounds = layout.rounds_of(isim_pseudo)
    rounds = rounds[1:] if len(rounds) > 1 else rounds
    scores = [layout.holdout_scores(d) for d in rounds]
    if any(h is None for h in scores):
        return layout.round_number(rounds[-1]), None
    scored = [(layout.round_number(d), h.crf_miou) for d, h in zip(rounds, scores) if h is not None]
    return max(reversed(scored), key=lambda rv: rv[1])  # ties: the later round


def pick_model(segmenter: Candidate, isim: Candidate | None) -> ModelChoice:
    """What `isim predict` uses by default: the model with the higher val mIoU (before CRF), the
    final segmenter when ISIM's round was not scored."""
    from isim.inference import ModelChoice
    if isim is None or isim.miou is None or segmenter.miou is None:
        return ModelChoice(segmenter.name, segmenter.checkpoint, segmenter.miou,
                           "the final segmenter (no val mIoU to compare it with an ISIM round)")
    win, lose = (isim, segmenter) if isim.miou > segmenter.miou else (segmenter, isim)
    return ModelChoice(win.name, win.checkpoint, win.miou,
                       f"higher val mIoU: {win.name} {win.miou:.2f} vs {lose.name} {lose.miou:.2f}", lose)
