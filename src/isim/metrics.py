"""Segmentation and classification metrics: confusion matrix (255 ignored), IoU, mIoU."""
from __future__ import annotations

import numpy as np

from isim.io import IGNORE


def confusion(pred: np.ndarray, gt: np.ndarray, n: int) -> np.ndarray:
    """n x n matrix, rows = ground truth, columns = prediction; gt == 255 is ignored."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    keep = gt != IGNORE
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if g.size and (g.max() >= n or p.max() >= n):
        raise ValueError(f"label values must be < {n}")
    return np.bincount(g * n + p, minlength=n * n).reshape(n, n)


def iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def miou(conf: np.ndarray) -> float:
    """Mean IoU over the classes that occur (in ground truth or prediction)."""
    v = iou(conf)
    return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")


def object_precision_recall(conf: np.ndarray) -> tuple[float, float]:
    """Pixels pooled over the object classes (background excluded): precision = of the pixels the
    masks give an object class, the share that ground truth gives the same class; recall = of
    the ground truth's object pixels, the share the masks give their class. CAMs that light up
    only the most discriminative part of an object have high precision and low recall."""
    tp = float(np.diag(conf)[1:].sum())
    pred, gt = float(conf[:, 1:].sum()), float(conf[1:, :].sum())
    return (tp / pred if pred else float("nan")), (tp / gt if gt else float("nan"))


def summary(conf: np.ndarray, classes: list[str]) -> dict:
    """mIoU, pixel accuracy, object precision/recall and per-class IoU, in percent, JSON-ready."""
    per = iou(conf)
    total = conf.sum()
    precision, recall = object_precision_recall(conf)
    return {
        "miou": round(100 * miou(conf), 3),
        "pixel_acc": round(100 * float(np.diag(conf).sum() / total), 3) if total else float("nan"),
        "precision": round(100 * precision, 3), "recall": round(100 * recall, 3),
        "iou": {c: (None if np.isnan(v) else round(100 * float(v), 3)) for c, v in zip(classes, per)},
    }


def classification(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Multi-label accuracy at probability 0.5: per label and exact match of the label set."""
    pred = logits > 0
    tgt = targets > 0.5
    return {"label_acc": round(100 * float((pred == tgt).mean()), 3),
            "exact_match": round(100 * float((pred == tgt).all(1).mean()), 3)}
