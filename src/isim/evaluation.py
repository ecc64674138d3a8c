"""Evaluation (paper Tables 2-5 shape): pseudo-mask mIoU of every round with and without CRF,
CAM mIoU over a threshold sweep, classification accuracy on train and val.

Pseudo masks are scored from the PNGs on disk, so what is measured is exactly what a user
gets with ``dvc get``; CAM sweeps and accuracy come from the final checkpoints.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from isim.pseudo import cam as camlib
from isim import metrics
from isim.config import Config
from isim.data.layout import Prepared
from isim.io import DataError, atomic_path, read_label_png, write_json


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


@torch.no_grad()
def sweep_and_accuracy(model: torch.nn.Module, data: Prepared, cfg: Config, device: torch.device) -> dict:
    """CAM mIoU (no CRF) at every eval threshold on train; classification accuracy on train/val."""
    n = data.n_classes
    thresholds = cfg.eval.thresholds
    confs = [np.zeros((n, n), np.int64) for _ in thresholds]
    out: dict = {}
    for split in ("train", "val"):
        ids = data.ids(split)
        if not ids:
            continue
        scales = cfg.transform.cam_scales if split == "train" and data.has_masks else [1.0]
        logits, targets = [], []
        for item, maps, keys, lg in camlib.dataset_cams(model, data, ids, cfg, device, scales, f"evaluate {split}"):
            logits.append(lg)
            targets.append(item["label"].numpy())
            if split == "train" and data.has_masks:
                gt = read_label_png(data.mask_path(item["id"]), n)
                for i, t in enumerate(thresholds):
                    confs[i] += metrics.confusion(keys[camlib.to_mask(maps, keys, t)], gt, n)
        out[f"{split}_classification"] = metrics.classification(np.stack(logits), np.stack(targets))
    if data.has_masks:
        out["threshold_sweep"] = [{"threshold": t, "miou": metrics.summary(c, data.classes)["miou"]}
                                  for t, c in zip(thresholds, confs)]
    return out


def rounds_of(pseudo_root: Path) -> list[Path]:
    rounds = sorted(p for p in pseudo_root.glob("round_*") if p.is_dir())
    if not rounds:
        raise DataError(f"{pseudo_root}: no round_XX directories; run the training stage first")
    return rounds


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def evaluate(cfg: Config, data: Prepared, cam_model: torch.nn.Module, cam_pseudo: Path,
             isim_model: torch.nn.Module, isim_pseudo: Path, device: torch.device) -> dict:
    """The comparison: CAM baseline vs ISIM rounds, with and without CRF."""
    ids = data.ids("train")
    report: dict = {"classes": data.classes,
                    "cam": sweep_and_accuracy(cam_model, data, cfg, device),
                    "isim": sweep_and_accuracy(isim_model, data, cfg, device)}
    if not data.has_masks:
        report["note"] = "dataset has no masks: only classification accuracy is reported"
        return report
    report["cam"]["pseudo"] = {"cam": score_dir(data, ids, cam_pseudo / "cam"),
                               "crf": score_dir(data, ids, cam_pseudo / "crf")}
    rounds = []
    for r in rounds_of(isim_pseudo):
        rounds.append({"round": int(r.name.split("_")[1]),
                       "cam": score_dir(data, ids, r / "cam"), "crf": score_dir(data, ids, r / "crf")})
    report["isim"]["rounds"] = rounds
    base, final = report["cam"]["pseudo"], rounds[-1]
    report["summary"] = {
        "cam_miou": base["cam"]["miou"], "cam_crf_miou": base["crf"]["miou"],
        "isim_miou": final["cam"]["miou"], "isim_crf_miou": final["crf"]["miou"],
        "gain": round(final["cam"]["miou"] - base["cam"]["miou"], 3),
        "gain_crf": round(final["crf"]["miou"] - base["crf"]["miou"], 3),
        "cam_train_label_acc": report["cam"]["train_classification"]["label_acc"],
        "isim_train_label_acc": report["isim"]["train_classification"]["label_acc"],
        "cam_val_label_acc": report["cam"].get("val_classification", {}).get("label_acc"),
        "isim_val_label_acc": report["isim"].get("val_classification", {}).get("label_acc"),
    }
    return report


def compact(report: dict) -> dict:
    """The headline numbers for `dvc metrics show` / `dvc exp show` (details stay in the report)."""
    out: dict = {"summary": report.get("summary", {})}
    for name in ("cam", "isim"):
        part = report.get(name, {})
        out[name] = {k: part[k] for k in ("train_classification", "val_classification") if k in part}
    if "rounds" in report.get("isim", {}):
        out["rounds"] = {f"round_{r['round']:02d}": {"isim": r["cam"]["miou"], "isim_crf": r["crf"]["miou"]}
                         for r in report["isim"]["rounds"]}
    return out


def write_outputs(report: dict, metrics_path: Path, report_path: Path, plots_dir: Path) -> None:
    write_json(report_path, report)
    write_json(metrics_path, compact(report))
    if "rounds" in report.get("isim", {}):
        base = report["cam"]["pseudo"]
        write_csv(plots_dir / "rounds.csv", [
            {"round": r["round"], "isim": r["cam"]["miou"], "isim_crf": r["crf"]["miou"],
             "cam": base["cam"]["miou"], "cam_crf": base["crf"]["miou"]} for r in report["isim"]["rounds"]])
    if "threshold_sweep" in report["cam"]:
        write_csv(plots_dir / "thresholds.csv", [
            {"threshold": a["threshold"], "cam": a["miou"], "isim": b["miou"]}
            for a, b in zip(report["cam"]["threshold_sweep"], report["isim"]["threshold_sweep"])])
