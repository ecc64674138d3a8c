"""Which pseudo-mask set the final segmenter trains on.

Three candidates come out of the chain: the last ISIM round after CRF (ISIM+CRF), the random
walk's masks (ISIM+RW) and those after CRF (ISIM+RW+CRF). Each is scored on the holdout images
(part of val, never trained on: ``holdout``), so the choice is made on photos whose masks the
results table does not report. ``segmenter.masks`` overrides it; without scores (a dataset with
image labels only) the paper's choice, ISIM+RW+CRF, stands.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from isim.run_layout import crf_dir, holdout_scores, raw_dir, rounds_of

CANDIDATES = ("isim_crf", "rw", "rw_crf")
NAMES = {"isim_crf": "ISIM+CRF", "rw": "ISIM+RW", "rw_crf": "ISIM+RW+CRF"}
PAPER = "rw_crf"  # the paper's (and IRN's) final masks


@dataclass(frozen=True)
class Choice:
    """The masks a segmenter trains on; kept in its checkpoint (``trained_on``)."""
    key: str                          # one of CANDIDATES, or "given" (a folder named on the command line)
    masks: str                        # the folder of PNG masks the segmenter trains on
    holdout_miou: float | None        # the chosen set's holdout mIoU (None: not measured)
    scores: dict[str, float]          # every candidate's holdout mIoU that was measured
    why: str

    @property
    def name(self) -> str:
        return NAMES.get(self.key, self.masks)

    def to_dict(self) -> dict:
        return asdict(self) | {"name": self.name}

    @classmethod
    def given(cls, masks: Path) -> Choice:
        return cls("given", str(masks), None, {}, "--masks")

    @classmethod
    def from_dict(cls, d: dict) -> Choice | None:
        """Back from a checkpoint's ``trained_on`` (None: the checkpoint records none)."""
        if not d:
            return None
        return cls(d["key"], d["masks"], d.get("holdout_miou"), dict(d.get("scores") or {}), d.get("why", ""))


def best(scores: dict[str, float]) -> str:
    """The candidate with the best holdout mIoU (ties: the later one in CANDIDATES)."""
    return max(reversed(CANDIDATES), key=lambda k: scores[k])


def choose(isim_pseudo: Path, rw_pseudo: Path, override: str = "auto") -> Choice:
    """The set with the best holdout mIoU (ties: the later one in CANDIDATES), or ``override``."""
    last = rounds_of(isim_pseudo)[-1]
    folders = {"isim_crf": crf_dir(last), "rw": raw_dir(rw_pseudo), "rw_crf": crf_dir(rw_pseudo)}
    isim_h, rw_h = holdout_scores(last), holdout_scores(rw_pseudo)
    scores = {k: h.miou(kind) for k, h, kind in (("isim_crf", isim_h, "crf"), ("rw", rw_h, "raw"),
                                                  ("rw_crf", rw_h, "crf")) if h is not None}
    if override != "auto":
        key, why = override, f"segmenter.masks: {override}"
    elif len(scores) < len(CANDIDATES):
        key, why = PAPER, "no holdout scores (no ground-truth masks on the holdout): the paper's choice"
    else:
        key = best(scores)
        why = "best holdout mIoU: " + ", ".join(f"{NAMES[k]} {scores[k]:.2f}" for k in CANDIDATES)
    return Choice(key, str(folders[key]), scores.get(key), scores, why)
