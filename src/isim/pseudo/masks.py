"""Pseudo labels (one ISIM round's masks): CAMs -> threshold -> dense CRF -> palette PNGs.

CAM inference runs in this process (GPU when present); thresholding, CRF, PNG writing and the
comparison with ground truth run in a pool of worker processes. At most ``2 x workers`` images
(plus one inference batch) are in flight, so memory does not grow with the dataset.
A round directory holds

    <round>/raw/<id>.png   thresholded CAM, before CRF
    <round>/crf/<id>.png   after dense CRF: the labels the next training phase learns from
    <round>/summary.json   counts, timings, and mIoU against ground truth when masks exist
"""
from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isim import metrics
from isim.config import Config, CrfCfg
from isim.data.layout import Prepared
from isim.io import read_label_png, write_json, write_label_png
from isim.models.net import ISIMNet
from isim.pseudo import cam as camlib
from isim.pseudo.crf import DenseCRF

_W: dict = {}  # per-worker state, set by _init


def _init(crf_cfg: CrfCfg, crf_on: bool, threshold: float, out: str | None, gt_dir: str | None,
          n_classes: int) -> None:
    _W.update(crf=DenseCRF(crf_cfg), crf_on=crf_on, threshold=threshold, out=Path(out) if out else None,
              gt_dir=Path(gt_dir) if gt_dir else None, n=n_classes)


def _finish(id_: str, rgb: np.ndarray, maps: np.ndarray, keys: np.ndarray) -> dict:
    """Threshold, refine, write, score one image (runs in a worker)."""
    local = camlib.to_mask(maps, keys, _W["threshold"])
    raw_mask = keys[local].astype(np.uint8)
    crf_mask = (keys[_W["crf"].refine(rgb, local, len(keys))].astype(np.uint8)
                if _W["crf_on"] else raw_mask)
    if _W["out"] is not None:
        write_label_png(_W["out"] / "raw" / f"{id_}.png", raw_mask)
        write_label_png(_W["out"] / "crf" / f"{id_}.png", crf_mask)
    res: dict[str, Any] = {"raw_bg_only": not raw_mask.any(), "crf_bg_only": not crf_mask.any()}
    if _W["gt_dir"] is not None:
        gt = read_label_png(_W["gt_dir"] / f"{id_}.png", _W["n"])
        if gt.shape != raw_mask.shape:
            raise ValueError(f"{_W['gt_dir'] / (id_ + '.png')}: mask is {gt.shape[::-1]} but its image "
                             f"is {raw_mask.shape[::-1]}")
        res["conf_raw"] = metrics.confusion(raw_mask, gt, _W["n"])
        res["conf_crf"] = metrics.confusion(crf_mask, gt, _W["n"])
    return res


def generate(model: ISIMNet, data: Prepared, ids: list[str], out: str | Path | None, cfg: Config,
             device: torch.device, workers: int | None = None, desc: str = "pseudo labels") -> dict:
    """Write one round of pseudo labels for ``ids`` into ``out`` (None: score them only, write
    nothing); return its summary."""
    workers = cfg.runtime.crf_workers if workers is None else workers
    gt_dir = str(data.root / "SegmentationClass") if data.has_masks else None
    init_args = (cfg.crf, cfg.crf.enabled, cfg.threshold, str(out) if out is not None else None, gt_dir,
                 data.n_classes)
    t0 = time.perf_counter()
    n = data.n_classes
    totals: dict[str, Any] = {"conf_raw": np.zeros((n, n), np.int64), "conf_crf": np.zeros((n, n), np.int64),
              "raw_bg_only": 0, "crf_bg_only": 0}
    logits, targets = [], []

    def collect(res: dict) -> None:
        for k, v in res.items():
            totals[k] += v

    pool = None
    if workers > 0:
        # workers only run numpy + pydensecrf, so fork (cheap, nothing re-imported) is safe
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=init_args)
    else:
        _init(*init_args)
    inflight: deque[Future] = deque()
    try:
        for item, maps, keys, lg in camlib.dataset_cams(model, data, ids, cfg, device, desc=desc):
            logits.append(lg)
            targets.append(item["label"].numpy())
            if pool is None:
                collect(_finish(item["id"], item["rgb"], maps, keys))
                continue
            inflight.append(pool.submit(_finish, item["id"], item["rgb"], maps, keys))
            while len(inflight) >= 2 * workers:
                collect(inflight.popleft().result())
        while inflight:
            collect(inflight.popleft().result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - t0
    summary = {"images": len(ids), "seconds": round(seconds, 3),
               "images_per_s": round(len(ids) / max(seconds, 1e-9), 3),
               "raw_bg_only": int(totals["raw_bg_only"]), "crf_bg_only": int(totals["crf_bg_only"]),
               "threshold": cfg.threshold, "crf_enabled": cfg.crf.enabled,
               "classification": metrics.classification(np.stack(logits), np.stack(targets)) if ids else {}}
    if gt_dir is not None:
        summary["raw"] = metrics.summary(totals["conf_raw"], data.classes)
        summary["crf"] = metrics.summary(totals["conf_crf"], data.classes)
    if out is not None:
        write_json(Path(out) / "summary.json", summary)
    return summary


def label_dir(round_dir: str | Path) -> Path:
    """Where the training labels of a round live."""
    return Path(round_dir) / "crf"


def score(model: ISIMNet, data: Prepared, ids: list[str], cfg: Config, device: torch.device,
          desc: str = "holdout") -> dict:
    """mIoU (before and after CRF) of the pseudo masks ``generate`` would write for ``ids``,
    without writing them: the tuning objective's measurement."""
    s = generate(model, data, ids, None, cfg, device, desc=desc)
    return {k: {"miou": s[k]["miou"]} for k in ("raw", "crf")} | {
        "images": s["images"], "crf_bg_only": s["crf_bg_only"], "seconds": s["seconds"]}
