"""What dense CRF does to the CAM baseline's masks, setting by setting: pseudo-mask mIoU, object
precision and recall on the first N train images of a finished run, for the labels unary (the
ISIM/IRN code's, gt_prob 0.7) and the scores unary (PSA's CAM probabilities) at several
temperatures, bilateral settings and thresholds; the masks before CRF are the baseline. It reads
the run's own outputs and changes nothing.

    .venv/bin/python benchmarks/crf_settings.py [--project .] [--images 150] [--checkpoint checkpoints/baseline.pt]
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from isim import settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--data", type=Path, help="prepared dataset (default: <project>/data/prepared)")
    ap.add_argument("--checkpoint", type=Path, help="default: <project>/checkpoints/baseline.pt")
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--thresholds", default="0.1,0.15")
    a = ap.parse_args()
    from isim import metrics
    from isim.config import load
    from isim.data.prepared import Prepared
    from isim.io import read_label_png
    from isim.models import load_model
    from isim.project import Project
    from isim.pseudo import cam as camlib
    from isim.pseudo.crf import DenseCRF

    cfg = load(a.project / "params.yaml")
    paths = Project(a.project)  # the project's own dvc.yaml says where its outputs are
    data = Prepared.open(a.data or paths.arg("prepare", "--out"))
    model = load_model(a.checkpoint or paths.arg("train_baseline", "--checkpoint"))
    items = [(it["rgb"], maps, keys, read_label_png(data.mask_path(it["id"]), data.n_classes))
             for it, maps, keys, _ in camlib.dataset_cams(model, data, data.ids("train")[: a.images],
                                                          settings.cams(cfg), torch.device("cpu"))]
    n = data.n_classes

    def score(threshold: float, crf: DenseCRF | None) -> str:
        conf = np.zeros((n, n), np.int64)
        for rgb, maps, keys, gt in items:
            s = camlib.with_background(maps, threshold)
            local = s.argmax(0) if crf is None else crf.refine(rgb, s.argmax(0), len(keys), s)
            conf += metrics.confusion(keys[local].astype(np.uint8), gt, n)
        r = metrics.summary(conf, data.classes)
        return f"{r['miou']:.1f} / {r['precision']:.0f} / {r['recall']:.0f}"

    thresholds = [float(t) for t in a.thresholds.split(",")]
    print(f"{len(items)} train images; mIoU / object precision / object recall")
    print("| masks | " + " | ".join(f"threshold {t}" for t in thresholds) + " |")
    print("| --- |" + " ---: |" * len(thresholds))
    print("| CAMs, no CRF | " + " | ".join(score(t, None) for t in thresholds) + " |")
    bilateral = [(10.0, 20.0, 5.0), (50.0, 5.0, 10.0)]  # (sxy, srgb, compat): 128 px choice, IRN's
    for (sxy, srgb, compat), unary, temp in itertools.product(bilateral, ["labels", "scores"], [0.2, 0.4]):
        if unary == "labels" and temp != 0.2:
            continue
        c = cfg.crf.model_copy(update={"unary": unary, "temperature": temp, "bilateral_sxy": sxy,
                                       "bilateral_srgb": srgb, "bilateral_compat": compat})
        name = (f"{unary} unary" + (f", T {temp}" if unary == "scores" else "")
                + f", bilateral {sxy:g}/{srgb:g}/{compat:g}")
        print(f"| {name} | " + " | ".join(score(t, DenseCRF(c)) for t in thresholds) + " |", flush=True)


if __name__ == "__main__":
    main()
