"""Pseudo labels (one ISIM round's masks): CAMs -> threshold -> dense CRF -> palette PNGs.

CAMs, thresholding, CRF, PNG writing and the comparison with ground truth run in a pool of
worker processes (pseudo/pool.py); on a GPU the CAMs come from this process instead
(cam.map_cams). Under torchrun every rank makes the masks of its share of the ids and the
scores are summed over the ranks.
A round's folder is laid out as run_layout.py says: raw/ and crf/ masks and summary.json.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isim import distributed, metrics
from isim import run_layout as layout
from isim.data.prepared import Prepared
from isim.io import DataError, read_label_png, write_json, write_label_png
from isim.mask_scores import HoldoutScore, MaskSetSummary, Score
from isim.models.net import ISIMNet
from isim.pseudo import cam as camlib
from isim.pseudo.crf import DenseCRF
from isim.settings import MaskSettings


@dataclass(frozen=True)
class Truth:
    """A prepared dataset's ground-truth masks, read in pool workers (``data`` None: no masks)."""
    data: Prepared | None

    @property
    def n(self) -> int:
        assert self.data is not None
        return self.data.n_classes

    def read(self, id_: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The ground-truth mask of ``id_``, checked against its image's ``shape`` (None when the
        dataset has no masks)."""
        if self.data is None or not self.data.has_masks:
            return None
        path = self.data.mask_path(id_)
        gt = read_label_png(path, self.n)
        if gt.shape != shape:
            raise ValueError(f"{path}: mask is {gt.shape[::-1]} but its image is {shape[::-1]}")
        return gt


@dataclass(frozen=True)
class MaskWriter:
    """Threshold, refine, write and score one image: a pool worker's task (``out`` None: score only)."""
    crf: DenseCRF
    crf_on: bool
    threshold: float
    out: Path | None
    truth: Truth

    def __call__(self, id_: str, rgb: np.ndarray, maps: np.ndarray, keys: np.ndarray) -> dict:
        # K class maps get the constant background score; K+1 maps carry their own (the walk's)
        scores = maps if len(maps) == len(keys) else camlib.with_background(maps, self.threshold)
        local = np.argmax(scores, axis=0)
        raw_mask = keys[local].astype(np.uint8)
        crf_mask = (keys[self.crf.refine(rgb, local, len(keys), scores)].astype(np.uint8) if self.crf_on
                    else raw_mask)
        if self.out is not None:
            write_label_png(layout.raw_dir(self.out) / f"{id_}.png", raw_mask)
            write_label_png(layout.crf_dir(self.out) / f"{id_}.png", crf_mask)
        res: dict[str, Any] = {"raw_bg_only": not raw_mask.any(), "crf_bg_only": not crf_mask.any()}
        gt = self.truth.read(id_, raw_mask.shape)
        if gt is not None:
            res["conf_raw"] = metrics.confusion(raw_mask, gt, self.truth.n)
            res["conf_crf"] = (metrics.confusion(crf_mask, gt, self.truth.n) if self.crf_on
                               else res["conf_raw"])  # CRF off: the same mask, scored once
        return res


def generate(model: ISIMNet | None, data: Prepared, ids: list[str], out: str | Path | None, settings: MaskSettings,
             device: torch.device, desc: str = "pseudo labels",
             propagate: Callable[[dict, np.ndarray], np.ndarray] | None = None) -> MaskSetSummary:
    """Write one round of pseudo labels for ``ids`` into ``out`` (None: score them only, write
    nothing); return its summary. ``propagate(item, maps)`` transforms the CAMs before the
    threshold is applied: the random walk."""
    threshold, crf = settings.threshold, settings.crf
    t0 = time.perf_counter()
    n = data.n_classes
    totals: dict[str, Any] = {"conf_raw": np.zeros((n, n), np.int64), "conf_crf": np.zeros((n, n), np.int64),
                              "raw_bg_only": 0, "crf_bg_only": 0}
    mine = distributed.shard(ids)
    # preallocated: thousands of small arrays kept between the per-image buffers would fragment
    # the heap so that memory grows with the dataset
    logits, targets = np.zeros((len(mine), n - 1), np.float32), np.zeros((len(mine), n - 1), np.float32)

    task = MaskWriter(DenseCRF(crf), crf.enabled, threshold, Path(out) if out is not None else None, Truth(data))
    for i, (res, lg, label) in enumerate(camlib.map_cams(model, data, mine, settings.cam, device, task,
                                                          settings.workers, desc, propagate)):
        logits[i], targets[i] = lg, label
        for k, v in res.items():
            totals[k] += v
    totals = {k: distributed.all_sum(np.asarray(v)) for k, v in totals.items()}
    parts = distributed.gather((logits, targets))
    logits, targets = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    seconds = time.perf_counter() - t0
    summary = MaskSetSummary(len(ids), round(seconds, 3), round(len(ids) / max(seconds, 1e-9), 3),
                             int(totals["raw_bg_only"]), int(totals["crf_bg_only"]), threshold, crf.enabled,
                             metrics.classification(logits, targets) if ids else {})
    if data.has_masks:
        summary.raw, summary.crf = (Score.from_json({**metrics.summary(totals[k], data.classes),
                                                      "confusion": totals[k].tolist()})
                                    for k in ("conf_raw", "conf_crf"))
    if out is not None and distributed.is_main():
        write_json(layout.summary_path(out), summary.to_json())
    return summary


def score(model: ISIMNet | None, data: Prepared, ids: list[str], settings: MaskSettings, device: torch.device,
          desc: str = "holdout", propagate: Callable[[dict, np.ndarray], np.ndarray] | None = None) -> HoldoutScore:
    """mIoU (before and after CRF) of the pseudo masks ``generate`` would write for ``ids``,
    without writing them: the tuning objective's measurement."""
    s = generate(model, data, ids, None, settings, device, desc, propagate)
    if s.raw is None or s.crf is None:
        raise DataError(f"{data.root}: the holdout images have no ground-truth masks to score against")
    return HoldoutScore(s.raw.miou, s.crf.miou, s.images, s.crf_bg_only, s.seconds)
