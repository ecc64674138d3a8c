"""The typed contract of a pseudo-mask set's ``summary.json`` (an ISIM round, the CAM baseline's
set, the random walk's): written by pseudo/masks.py, read through run_layout.read_summary by
training, tuning, the segmenter's choice of masks, evaluation and tracking. The JSON file is its
serialisation; readers use attributes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Score:
    """A mask set against the ground truth (metrics.summary), in percent."""

    miou: float
    pixel_acc: float
    precision: float   # object precision / recall (metrics.object_precision_recall)
    recall: float
    iou: dict[str, float | None]  # per class; None where a class is absent
    confusion: list[list[int]] | None = None  # rows: ground truth, columns: masks (None: not kept)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Score:
        return cls(d["miou"], d["pixel_acc"], d["precision"], d["recall"], dict(d["iou"]), d.get("confusion"))


@dataclass(frozen=True)
class HoldoutScore:
    """The mIoU of the masks a model would make for the holdout images, never trained on (the
    tuning objective and the segmenter's choice of masks)."""

    raw_miou: float
    crf_miou: float
    images: int
    crf_bg_only: int
    seconds: float

    def miou(self, kind: str) -> float:
        """``kind``: "raw" (thresholded CAM) or "crf" (after dense CRF)."""
        return {"raw": self.raw_miou, "crf": self.crf_miou}[kind]

    def to_json(self) -> dict[str, Any]:
        return {"raw": {"miou": self.raw_miou}, "crf": {"miou": self.crf_miou}, "images": self.images,
                "crf_bg_only": self.crf_bg_only, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HoldoutScore:
        return cls(d["raw"]["miou"], d["crf"]["miou"], d["images"], d["crf_bg_only"], d["seconds"])


@dataclass(frozen=True)
class RuleScore:
    """One of the random walk's decision rules (pseudo/walk.py) on the holdout images: its masks'
    mIoU and object precision / recall before CRF, in percent."""

    rule: str      # e.g. "psa alpha=8", "irn bg=0.25"
    mode: str
    value: float
    miou: float
    precision: float
    recall: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RuleScore:
        return cls(d["rule"], d["mode"], d["value"], d["miou"], d["precision"], d["recall"])


@dataclass
class MaskSetSummary:
    """One mask set: counts, timing, classification accuracy of the model that made it, and its
    scores where the dataset has ground truth (``raw``/``crf``) and a holdout (``holdout``).
    ``round`` and ``after_epoch`` are set for ISIM's rounds."""

    images: int
    seconds: float
    images_per_s: float
    raw_bg_only: int       # masks that are all background, before / after CRF
    crf_bg_only: int
    threshold: float
    crf_enabled: bool
    classification: dict[str, float] = field(default_factory=dict)
    raw: Score | None = None
    crf: Score | None = None
    holdout: HoldoutScore | None = None
    round: int | None = None
    after_epoch: int | None = None
    rule: str | None = None                 # the random walk's decision rule (its masks only)
    rules: list[RuleScore] | None = None    # every candidate rule on the holdout, best first

    def to_json(self) -> dict[str, Any]:
        """The summary.json content (keys of unset parts left out)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.holdout is not None:
            out["holdout"] = self.holdout.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MaskSetSummary:
        scores = {k: Score.from_json(d[k]) for k in ("raw", "crf") if k in d}
        holdout = HoldoutScore.from_json(d["holdout"]) if "holdout" in d else None
        return cls(d["images"], d["seconds"], d["images_per_s"], d["raw_bg_only"], d["crf_bg_only"], d["threshold"],
                   d["crf_enabled"], dict(d.get("classification", {})), scores.get("raw"), scores.get("crf"),
                   holdout, d.get("round"), d.get("after_epoch"), d.get("rule"),
                   [RuleScore.from_json(r) for r in d["rules"]] if "rules" in d else None)

    def mious(self) -> dict[str, float]:
        """mIoU before and after CRF, where scored (for log lines)."""
        return {k: s.miou for k, s in (("raw", self.raw), ("crf", self.crf)) if s is not None}
