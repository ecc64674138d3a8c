"""How the CAM is normalised, measured on the holdout photos of a finished run.

The pipeline divides each class's CAM by its own maximum (PSA, IRN) and thresholds it against a
constant background score. On photos the masks over-cover (docs/real-photos.md), which
this could cause: a flat map is stretched to 1 as much as a peaked one. This script computes a
run's CAMs once on its holdout photos (the tuning objective's photos, never the train photos the
tables report, never trained on) and scores the masks of each normalisation over a threshold
sweep, then refines each one's best and the run's own threshold with the run's CRF:

    .venv/bin/python benchmarks/cam_normalisation.py --project /tmp/isim-real-photos/tuned-seed0

Normalisations (each map is the image's ReLU CAM summed over scales and flips, for the classes in
its label):
- class max:     each map / its maximum (the pipeline's)
- image max:     each map / the maximum over the image's classes (a weaker class stays weaker)
- class p99:     each map / its 99th percentile, clipped at 1 (one hot spot does not set the scale)
- class min-max: (map - its minimum) / (its maximum - its minimum)

The best threshold of a sweep is chosen on the photos it is scored on, which flatters every
normalisation alike; the run's own threshold is the unflattered column.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from isim import config, metrics
from isim import run_layout as layout
from isim.data.datasets import InferenceDataset
from isim.data.prepared import Prepared
from isim.io import write_json
from isim.models import load_model
from isim.project import Project
from isim.pseudo.cam import multiscale_cam, normalise, same_size_batches
from isim.pseudo.crf import DenseCRF
from isim.pseudo.masks import MaskWriter, Truth

EPS = 1e-5


def _per_class(maps: np.ndarray, stat: Callable[..., np.ndarray]) -> np.ndarray:
    return stat(maps.reshape(len(maps), -1), axis=1)[:, None, None]


NORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "class max": lambda m: m / (_per_class(m, np.max) + EPS),
    "image max": lambda m: m / (m.max() + EPS),
    "class p99": lambda m: np.minimum(m / (_per_class(m, lambda a, axis: np.percentile(a, 99, axis=axis)) + EPS), 1),
    "class min-max": lambda m: (m - _per_class(m, np.min)) / (_per_class(m, np.max) - _per_class(m, np.min) + EPS),
}
THRESHOLDS = [round(t, 2) for t in np.arange(0.10, 0.71, 0.05)]


def holdout_cams(checkpoint: Path, cfg: config.Config, data: Prepared, ids: list[str]) -> list[dict]:
    """Per holdout photo: its id, RGB, keys (0 then class indices) and raw CAMs (not normalised)."""
    model = load_model(checkpoint, "cpu").eval()
    out = []
    for items in same_size_batches(InferenceDataset(data, ids, cfg.transform, list(cfg.cam.scales)),
                                   cfg.runtime.cam_batch_size):
        cams, _ = multiscale_cam(model, items, torch.device("cpu"))
        for item, c in zip(items, cams):
            keys = normalise(c, item["label"])[1]  # the pipeline's keys; the maps stay raw here
            present = torch.from_numpy(keys[1:] - 1)
            out.append({"id": item["id"], "rgb": item["rgb"], "keys": keys, "cams": c[present].numpy()})
    return out


def score(photos: list[dict], norm: Callable[[np.ndarray], np.ndarray], threshold: float, data: Prepared,
          crf: DenseCRF, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrices of the pipeline's masks at ``threshold``: raw, and after ``crf`` (the raw
    one again when not ``refine``), made and scored by the pipeline's own mask writer."""
    writer = MaskWriter(crf, refine, threshold, None, Truth(data))
    raw = np.zeros((data.n_classes, data.n_classes), np.int64)
    refined = raw.copy()
    for p in photos:
        maps = norm(p["cams"]) if len(p["cams"]) else p["cams"]  # a photo of background only
        res = writer(p["id"], p["rgb"], maps.astype(np.float32), p["keys"])
        raw += res["conf_raw"]
        refined += res["conf_crf"]
    return raw, refined


def measure(photos: list[dict], cfg: config.Config, data: Prepared) -> dict[str, dict]:
    crf = DenseCRF(cfg.crf)
    res: dict[str, dict] = {}
    for name, norm in NORMS.items():
        sweep = {t: metrics.miou(score(photos, norm, t, data, crf, refine=False)[0]) * 100 for t in THRESHOLDS}
        best = max(sweep, key=lambda t: sweep[t])
        row: dict = {"sweep": sweep, "best_threshold": best}
        for key, t in (("best", best), ("own", cfg.threshold)):
            raw, refined = score(photos, norm, t, data, crf)
            prec, rec = metrics.object_precision_recall(refined)
            row[key] = {"threshold": t, "raw": metrics.miou(raw) * 100, "crf": metrics.miou(refined) * 100,
                        "crf_precision": prec * 100, "crf_recall": rec * 100}
        res[name] = row
    return res


def table(model: str, res: dict[str, dict], own: float) -> str:
    lines = [f"{model}: mIoU (%) of the holdout masks; own threshold {own:.3g}", "",
             "| normalisation | own: raw | own: CRF | own: CRF precision / recall | best threshold | best: raw "
             "| best: CRF | best: CRF precision / recall |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for name, r in res.items():
        o, b = r["own"], r["best"]
        lines.append(f"| {name} | {o['raw']:.2f} | {o['crf']:.2f} | {o['crf_precision']:.0f} / {o['crf_recall']:.0f} "
                     f"| {b['threshold']:.2f} | {b['raw']:.2f} | {b['crf']:.2f} "
                     f"| {b['crf_precision']:.0f} / {b['crf_recall']:.0f} |")
    lines += ["", "raw mIoU over the sweep:", "",
              "| normalisation | " + " | ".join(f"{t:.2f}" for t in THRESHOLDS) + " |",
              "| --- |" + " ---: |" * len(THRESHOLDS)]
    lines += [f"| {name} | " + " | ".join(f"{r['sweep'][t]:.1f}" for t in THRESHOLDS) + " |" for name, r in res.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, required=True,
                    help="a project after `dvc repro` (a benchmark's --work run)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()
    cfg = config.load(args.project / "params.yaml")
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    paths = Project(args.project)  # the project's own dvc.yaml says where its outputs are
    data = Prepared.open(paths.arg("prepare", "--out"))
    ids = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction)
    models = {"CAM baseline": paths.arg("train_baseline", "--checkpoint"),
              "ISIM (last round)": layout.final_checkpoint(paths.arg("train_isim", "--checkpoints"))}
    out: dict = {"project": str(args.project), "photos": len(ids), "split": cfg.holdout.split,
                 "threshold": cfg.threshold, "models": {}}
    for model, ckpt in models.items():
        res = measure(holdout_cams(ckpt, cfg, data, ids), cfg, data)
        out["models"][model] = {"checkpoint": str(ckpt.relative_to(args.project)), "normalisations": res}
        print(table(model, res, cfg.threshold), "\n", flush=True)
    if args.json:
        write_json(args.json, json.loads(json.dumps(out, default=float)))


if __name__ == "__main__":
    main()
