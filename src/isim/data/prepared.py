"""The prepared-dataset layout every source is converted into (VOC2012 style).

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png      palette PNG, 0 = background, 255 = void (optional)
    <root>/ImageSets/Segmentation/{train,val}.txt
    <root>/image_labels.json               {"classes": [...], "labels": {id: [class idx, ...]},
                                            "has_masks": bool, "skipped": {...}}

Image-level labels are the only supervision training sees; masks are for evaluation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isim.io import IGNORE, DataError, write_json, write_text

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]


def labels_from_mask(mask: np.ndarray, n_classes: int) -> list[int]:
    """Foreground class indices present in a mask (void and background excluded)."""
    vals = np.unique(mask)
    return [int(v) for v in vals if 0 < v < n_classes]


def write_split(root: Path, split: str, ids: list[str]) -> None:
    write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))


def write_labels(root: Path, classes: list[str], labels: dict[str, list[int]], has_masks: bool,
                 skipped: dict[str, str] | None = None, source: str = "") -> None:
    write_json(root / "image_labels.json", {
        "classes": classes, "labels": labels, "has_masks": has_masks,
        "skipped": skipped or {}, "source": source,
    })


@dataclass
class Prepared:
    """Read access to a prepared dataset, with checks that name the offending file."""

    root: Path
    classes: list[str]
    labels: dict[str, list[int]]
    has_masks: bool

    @classmethod
    def open(cls, root: str | Path) -> Prepared:
        root = Path(root)
        meta_path = root / "image_labels.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: missing; run `isim prepare` (or `dvc repro prepare`) first")
        try:
            meta = json.loads(meta_path.read_text())
            classes, labels = list(meta["classes"]), dict(meta["labels"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{meta_path}: not a valid label file ({e})") from None
        return cls(root, classes, {k: list(v) for k, v in labels.items()}, bool(meta["has_masks"]))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def ids(self, split: str) -> list[str]:
        path = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not path.is_file():
            raise DataError(f"{path}: split list is missing")
        ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        missing = [i for i in ids if i not in self.labels]
        if missing:
            raise DataError(f"{path}: {len(missing)} ids have no image-level label, e.g. {missing[:3]}")
        return ids

    def holdout_ids(self, split: str, fraction: float) -> list[str]:
        """A fixed share of ``split`` (drawn with seed 0, whatever the run's seed), in split order:
        the images the tuning objective is measured on."""
        ids = self.ids(split)
        if not self.has_masks:
            raise DataError(f"{self.root}: the dataset has no masks, so no pseudo-mask mIoU can be measured "
                            "on a holdout (tuning needs a labelled split: holdout.split)")
        n = max(1, round(fraction * len(ids))) if ids else 0
        keep = set(np.random.default_rng(0).permutation(len(ids))[:n].tolist())
        return [i for k, i in enumerate(ids) if k in keep]

    def image_path(self, id_: str) -> Path:
        return self.root / "JPEGImages" / f"{id_}.jpg"

    def mask_path(self, id_: str) -> Path:
        return self.root / "SegmentationClass" / f"{id_}.png"

    def label_vector(self, id_: str) -> np.ndarray:
        """Multi-hot over foreground classes (length n_classes - 1)."""
        v = np.zeros(self.n_classes - 1, np.float32)
        for c in self.labels[id_]:
            v[c - 1] = 1.0
        return v


__all__ = ["IGNORE", "VOC_CLASSES", "Prepared", "labels_from_mask", "write_split", "write_labels"]
