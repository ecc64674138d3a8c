"""What the random walk does to the final ISIM CAMs, setting by setting: pseudo-mask mIoU,
object precision and recall (no CRF) on the first N train images of a finished `dvc repro`,
for walks of 2 ** k steps and several background thresholds; the unwalked CAMs at the same
thresholds are the baseline. It reads the pipeline's own outputs and changes nothing.

    .venv/bin/python benchmarks/rw_settings.py [--project .] [--images 150] [--affinity checkpoints/affinity.pt]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--affinity", type=Path, help="AffinityNet checkpoint (default: the project's)")
    ap.add_argument("--exp-times", default="1,2,4,8")
    ap.add_argument("--thresholds", default="0.1,0.15,0.25")
    a = ap.parse_args()
    from isim import metrics
    from isim.config import load
    from isim.data.layout import Prepared
    from isim.io import read_label_png
    from isim.models import load_affinity, load_model
    from isim.pseudo import cam as camlib
    from isim.pseudo.walk import RandomWalk
    from isim.run_layout import final_checkpoint

    root = a.project
    cfg = load(root / "params.yaml")
    data = Prepared.open(root / "data/prepared")
    ids = data.ids("train")[: a.images]
    model = load_model(final_checkpoint(root / "checkpoints/isim"))
    net = load_affinity(a.affinity or root / "checkpoints/affinity.pt")
    walkers = {k: RandomWalk(net, cfg.transform, cfg.affinity.radius, cfg.random_walk.model_copy(
        update={"exp_times": k}), torch.device("cpu")) for k in (int(x) for x in a.exp_times.split(","))}
    ths = [float(t) for t in a.thresholds.split(",")]
    n = data.n_classes
    conf = {(k, t): np.zeros((n, n), np.int64) for k in [None, *walkers] for t in ths}
    for item, maps, keys, _ in camlib.dataset_cams(model, data, ids, camlib.CamSettings.of(cfg), torch.device("cpu")):
        gt = read_label_png(data.mask_path(item["id"]), n)
        for k in [None, *walkers]:
            m = maps if k is None else walkers[k](item, maps)
            for t in ths:
                conf[(k, t)] += metrics.confusion(keys[camlib.to_mask(m, keys, t)], gt, n)
    print(f"{len(ids)} train images; mIoU / precision / recall (%), no CRF")
    print("| masks | " + " | ".join(f"threshold {t}" for t in ths) + " |")
    print("| --- | " + " | ".join("---:" for _ in ths) + " |")
    for k in [None, *walkers]:
        cells = []
        for t in ths:
            s = metrics.summary(conf[(k, t)], data.classes)
            cells.append(f"{s['miou']:.1f} / {s['precision']:.0f} / {s['recall']:.0f}")
        print(f"| {'ISIM CAMs' if k is None else f'walk, {2 ** k} steps'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
