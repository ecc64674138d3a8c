"""Affinity labels (PSA; paper 4.1.6): where the CAMs are sure, and nothing else.

The final ISIM model's CAMs are thresholded twice: at ``affinity.fg_threshold`` (a high
background score, so only confident object pixels stay foreground) and at
``affinity.bg_threshold`` (a low one, so only confident background stays background). Both are
refined with dense CRF; where they agree the pixel keeps the label, elsewhere it is 255 and no
pair that touches it is learnt. One palette PNG per image plus ``summary.json`` (the share of
pixels labelled foreground and background and, with ground truth, the precision of each: what
AffinityNet is taught). models/affinitynet.py's ``cell_labels`` brings them to its feature grid.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isim import metrics
from isim.config import CrfCfg
from isim.data.prepared import Prepared
from isim.io import IGNORE, write_json, write_label_png
from isim.models.net import ISIMNet
from isim.pseudo import cam as camlib
from isim.pseudo.crf import DenseCRF
from isim.pseudo.masks import Truth
from isim.run_layout import summary_path
from isim.settings import CamSettings


@dataclass(frozen=True)
class AffinityLabeller:
    """One image's affinity label, written and scored: a pool worker's task."""
    crf: DenseCRF
    crf_on: bool
    fg_threshold: float
    bg_threshold: float
    out: Path
    truth: Truth

    def label(self, rgb: np.ndarray, maps: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Class indices where both thresholds agree, 255 elsewhere."""
        sure = []
        for t in (self.fg_threshold, self.bg_threshold):
            scores = camlib.with_background(maps, t)
            local = np.argmax(scores, axis=0)
            sure.append(self.crf.refine(rgb, local, len(keys), scores) if self.crf_on else local)
        fg, bg = sure
        return np.where(fg == bg, keys[fg], IGNORE).astype(np.uint8)

    def __call__(self, id_: str, rgb: np.ndarray, maps: np.ndarray, keys: np.ndarray) -> dict:
        lab = self.label(rgb, maps, keys)
        write_label_png(self.out / f"{id_}.png", lab)
        known = lab != IGNORE
        res: dict[str, Any] = {"pixels": lab.size, "labelled": int(known.sum()),
                               "fg": int((known & (lab > 0)).sum())}
        gt = self.truth.read(id_, lab.shape)
        if gt is not None:
            res["conf"] = metrics.confusion(lab[known], gt[known], self.truth.n)
        return res


def generate(model: ISIMNet | None, data: Prepared, ids: list[str], out: str | Path, cam: CamSettings, crf: CrfCfg,
             fg_threshold: float, bg_threshold: float, device: torch.device, workers: int = 0) -> dict:
    """Write the affinity labels of ``ids`` into ``out`` (``workers`` processes for CRF and PNG
    encoding); return the summary. ``model``: None when ``cam.source`` holds the CAMs."""
    t0 = time.perf_counter()
    n = data.n_classes
    totals: dict[str, Any] = {"pixels": 0, "labelled": 0, "fg": 0, "conf": np.zeros((n, n), np.int64)}

    task = AffinityLabeller(DenseCRF(crf), crf.enabled, fg_threshold, bg_threshold, Path(out), Truth(data))
    for res, _, _ in camlib.map_cams(model, data, ids, cam, device, task, workers, "affinity labels"):
        for k, v in res.items():
            totals[k] += v
    summary: dict[str, Any] = {
        "images": len(ids), "seconds": round(time.perf_counter() - t0, 3),
        "fg_threshold": fg_threshold, "bg_threshold": bg_threshold,
        "labelled_share": round(totals["labelled"] / max(1, totals["pixels"]), 4),
        "fg_share": round(totals["fg"] / max(1, totals["pixels"]), 4),
        "bg_share": round((totals["labelled"] - totals["fg"]) / max(1, totals["pixels"]), 4)}
    if data.has_masks:
        # how right the labels are where they are given: what AffinityNet learns from
        conf = totals["conf"]
        summary["labelled"] = metrics.summary(conf, data.classes)
        summary["fg_precision"] = summary["labelled"]["precision"]  # confident objects that are that object
        summary["bg_precision"] = round(100 * float(conf[0, 0] / max(1, conf[:, 0].sum())), 3)
    write_json(summary_path(out), summary)
    return summary

