"""Evaluation (paper Tables 2-5 shape): pseudo-mask mIoU of every round with and without CRF,
CAM mIoU over a threshold sweep, classification accuracy on train and val.

Pseudo masks are scored from the PNGs on disk, so what is measured is exactly what a user
gets with ``dvc get``; CAM sweeps and accuracy come from the final checkpoints.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from isim import metrics
from isim import run_layout as layout
from isim.config import Config, CrfCfg
from isim.data.prepared import Prepared
from isim.io import DataError, read_image, read_label_png, write_csv, write_json, write_text
from isim.models.net import ISIMNet
from isim.pseudo import cam as camlib
from isim.pseudo import pool
from isim.pseudo.masks import Truth


def score_set(data: Prepared, ids: list[str], mask_set: Path) -> dict[str, dict]:
    """A mask set's raw and CRF masks against ground truth."""
    return {"raw": score_dir(data, ids, layout.raw_dir(mask_set)),
            "crf": score_dir(data, ids, layout.crf_dir(mask_set))}


def score_dir(data: Prepared, ids: list[str], pred_dir: Path) -> dict:
    """mIoU of the masks in ``pred_dir`` against ground truth."""
    n = data.n_classes
    conf = np.zeros((n, n), np.int64)
    for id_ in ids:
        pred = read_label_png(pred_dir / f"{id_}.png", n)
        gt = read_label_png(data.mask_path(id_), n)
        if pred.shape != gt.shape:
            raise DataError(f"{pred_dir / (id_ + '.png')}: is {pred.shape[::-1]}, ground truth "
                            f"{gt.shape[::-1]}")
        conf += metrics.confusion(pred, gt, n)
    return {**metrics.summary(conf, data.classes), "confusion": conf.tolist()}


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
def sweep_and_accuracy(model: ISIMNet, data: Prepared, cfg: Config, device: torch.device,
                       train_cams: Path | None = None) -> dict:
    """CAM mIoU (no CRF) at every eval threshold on train; classification accuracy on train/val.
    ``train_cams``: the model's CAMs of the train images, kept when its masks were made."""
    n = data.n_classes
    thresholds = tuple(cfg.eval.thresholds)
    confs = [np.zeros((n, n), np.int64) for _ in thresholds]
    out: dict = {}
    for split in ("train", "val"):
        ids = data.ids(split)
        if not ids:
            continue
        cam = camlib.CamSettings.of(cfg)
        sweep = split == "train" and data.has_masks
        if split == "train" and train_cams is not None:
            cam = replace(cam, source=train_cams)
        elif not sweep:  # accuracy alone: the scale-1.0 logits
            cam = replace(cam, scales=[1.0])
        task = SweepScorer(thresholds, Truth(data if sweep else None))
        logits, targets = [], []
        for found, lg, label in camlib.map_cams(model, data, ids, cam, device, task, cfg.runtime.crf_workers,
                                                f"evaluate {split}"):
            logits.append(lg)
            targets.append(label)
            for c, f in zip(confs, found):
                c += f
        out[f"{split}_classification"] = metrics.classification(np.stack(logits), np.stack(targets))
    if data.has_masks:
        out["threshold_sweep"] = [{"threshold": t, "miou": metrics.summary(c, data.classes)["miou"]}
                                  for t, c in zip(thresholds, confs)]
    return out


def fig5_columns(baseline_pseudo: Path, isim_pseudo: Path, rw_pseudo: Path | None = None) -> list[tuple[str, Path]]:
    """Paper Fig. 5's columns after the image and its truth: the CRF masks of the CAM baseline,
    of every ISIM round and of the random walk, each with its name."""
    cols = [("CAM baseline", layout.crf_dir(baseline_pseudo))] + [
        (f"ISIM round {layout.round_number(r)}", layout.crf_dir(r)) for r in layout.rounds_of(isim_pseudo)]
    return cols + ([("ISIM+RW", layout.crf_dir(rw_pseudo))] if rw_pseudo is not None else [])


def evaluate(cfg: Config, data: Prepared, baseline_model: ISIMNet, baseline_pseudo: Path,
             isim_model: ISIMNet, isim_pseudo: Path, device: torch.device, rw_pseudo: Path | None = None) -> dict:
    """The comparison: CAM baseline vs ISIM rounds (and the random walk of the final round's
    CAMs when ``rw_pseudo`` is given), pseudo masks before (raw) and after CRF."""
    ids = data.ids("train")
    report: dict = {"classes": data.classes,
                    "baseline": sweep_and_accuracy(baseline_model, data, cfg, device,
                                                   layout.kept_cams(baseline_pseudo) if cfg.cam.keep else None),
                    "isim": sweep_and_accuracy(isim_model, data, cfg, device,
                                               layout.final_cams(isim_pseudo) if cfg.cam.keep else None)}
    accuracy = {f"{name}_{split}_label_acc": report[name].get(f"{split}_classification", {}).get("label_acc")
                for name in ("baseline", "isim") for split in ("train", "val")}
    if not data.has_masks:
        report["note"] = "dataset has no masks: only classification accuracy is reported"
        report["summary"] = accuracy
        return report
    report["baseline"]["pseudo"] = score_set(data, ids, baseline_pseudo)
    rounds: list[dict] = [{"round": layout.round_number(r), **score_set(data, ids, r)}
                          for r in layout.rounds_of(isim_pseudo)]
    report["isim"]["rounds"] = rounds
    base, final = report["baseline"]["pseudo"], rounds[-1]
    report["summary"] = {
        "baseline_miou": base["raw"]["miou"], "baseline_crf_miou": base["crf"]["miou"],
        "isim_miou": final["raw"]["miou"], "isim_crf_miou": final["crf"]["miou"],
        "gain": round(final["raw"]["miou"] - base["raw"]["miou"], 3),
        "gain_crf": round(final["crf"]["miou"] - base["crf"]["miou"], 3),
        # why the masks change: object precision / recall of the CRF masks (metrics.object_precision_recall)
        "baseline_crf_precision": base["crf"]["precision"], "baseline_crf_recall": base["crf"]["recall"],
        "isim_crf_precision": final["crf"]["precision"], "isim_crf_recall": final["crf"]["recall"],
        **accuracy,
    }
    if rw_pseudo is not None:  # paper Table 7: ISIM+RW and ISIM+RW+CRF
        rw = report["random_walk"] = score_set(data, ids, rw_pseudo)
        report["summary"].update(isim_rw_miou=rw["raw"]["miou"], isim_rw_crf_miou=rw["crf"]["miou"],
                                 gain_rw=round(rw["raw"]["miou"] - final["raw"]["miou"], 3),
                                 gain_rw_crf=round(rw["crf"]["miou"] - final["crf"]["miou"], 3),
                                 isim_rw_crf_precision=rw["crf"]["precision"], isim_rw_crf_recall=rw["crf"]["recall"])
        report["chain"] = chain_on_holdout(layout.rounds_of(isim_pseudo)[-1], rw_pseudo)
    return report


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


def compact(report: dict) -> dict:
    """metrics/eval.json: the comparison's figures and the stage's seconds (details stay in the
    report; the run's headline is the headline stage's)."""
    out: dict = {"summary": report.get("summary", {})}
    if "seconds" in report:
        out["seconds"] = report["seconds"]
    for name in ("baseline", "isim"):
        part = report.get(name, {})
        out[name] = {k: part[k] for k in ("train_classification", "val_classification") if k in part}
    if "rounds" in report.get("isim", {}):
        out["rounds"] = {layout.round_name(r["round"]): {
            "isim": r["raw"]["miou"], "isim_crf": r["crf"]["miou"],
            "precision": r["raw"]["precision"], "recall": r["raw"]["recall"],
            "crf_precision": r["crf"]["precision"], "crf_recall": r["crf"]["recall"]}
            for r in report["isim"]["rounds"]}
    return out


def write_outputs(report: dict, metrics_path: Path, report_path: Path, plots_dir: Path) -> None:
    write_json(report_path, report)
    write_json(metrics_path, compact(report))
    if "rounds" not in report.get("isim", {}):  # no masks: no mIoU, but the declared plot files exist
        write_text(plots_dir / "rounds.csv", "round,isim,isim_crf,baseline,baseline_crf,recall,precision\n")
        write_text(plots_dir / "thresholds.csv", "threshold,baseline,isim\n")
        return
    base = report["baseline"]["pseudo"]
    write_csv(plots_dir / "rounds.csv", [
        {"round": r["round"], "isim": r["raw"]["miou"], "isim_crf": r["crf"]["miou"],
         "baseline": base["raw"]["miou"], "baseline_crf": base["crf"]["miou"],
         "recall": r["crf"]["recall"], "precision": r["crf"]["precision"]}
        for r in report["isim"]["rounds"]])
    if "threshold_sweep" in report["baseline"]:
        write_csv(plots_dir / "thresholds.csv", [
            {"threshold": a["threshold"], "baseline": a["miou"], "isim": b["miou"]}
            for a, b in zip(report["baseline"]["threshold_sweep"], report["isim"]["threshold_sweep"])])


def evaluate_segmenter(checkpoint: Path, data: Prepared, split: str, device: torch.device, crf: bool,
                       scales: list[float], batch_size: int = 8, workers: int = 0,
                       subset: list[str] | None = None) -> dict:
    """The final segmenter (or an ISIM round's segmentation branch) on ``split`` against ground
    truth (paper Tables 8-11: val mIoU), with the inference ``isim predict`` runs (multi-scale +
    flip, equal-size images batched), and after dense CRF when ``crf`` (in ``workers`` processes
    while the model segments the next images). ``subset``: those ids are also scored on their
    own (``report["subset"]``), in the same pass."""
    from isim.inference import Predictor
    ids = data.ids(split)
    if not data.has_masks or not ids:
        return {"split": split, "images": len(ids), "note": "no ground-truth masks on this split: nothing to score"}
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
    out: dict = {"split": split, "images": len(ids), "arch": predictor.arch}
    for kind in kinds:
        out[kind] = {**metrics.summary(conf[kind], data.classes), "confusion": conf[kind].tolist()}
    if subset:
        out["subset"] = {"images": len(inside & set(ids)),
                         **{kind: {"miou": metrics.summary(sub_conf[kind], data.classes)["miou"]} for kind in kinds}}
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


def pick_model(segmenter: dict, isim: dict | None) -> dict:
    """What `isim predict` uses by default: the model with the higher val mIoU (``raw``; each
    dict is ``{"checkpoint", "name", "miou"}``), the final segmenter when ISIM's round was not
    scored. Returns the winner with ``why``."""
    if isim is None or isim["miou"] is None or segmenter["miou"] is None:
        return {**segmenter, "why": "the final segmenter (no val mIoU to compare it with an ISIM round)"}
    win, lose = (isim, segmenter) if isim["miou"] > segmenter["miou"] else (segmenter, isim)
    return {**win, "why": f"higher val mIoU: {win['name']} {win['miou']:.2f} vs {lose['name']} {lose['miou']:.2f}",
            "runner_up": lose}
