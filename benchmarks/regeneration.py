"""Pseudo-label regeneration throughput: the worker pool (CRF in worker processes, CAMs batched in
the main process) vs a plain sequential loop, on the embedded dataset; and peak memory for two
dataset sizes (it must not grow with the number of images).

    .venv/bin/python benchmarks/regeneration.py [--images 200] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def make_data(images: int) -> Path:
    from isim.config import load
    from isim.data.synthetic import generate

    syn = load(ROOT / "params.yaml").data.synthetic.model_copy(update={"n_train": images, "n_val": 1})
    root = Path(tempfile.mkdtemp()) / "data"
    generate(syn, root)
    return root


def one(root: Path, workers: int) -> dict:
    from isim.config import load
    from isim.data.layout import Prepared
    from isim.models import build_model, model_spec
    from isim.pseudo import masks as pseudo

    cfg = load(ROOT / "params.yaml")
    tmp = Path(tempfile.mkdtemp())
    data = Prepared.open(root)
    torch.manual_seed(0)
    model = build_model(model_spec(cfg.encoder, cfg.model, data.n_classes))
    ids = data.ids("train")
    pseudo.generate(model, data, ids[:16], tmp / "warm", cfg, torch.device("cpu"), workers=workers)
    s = pseudo.generate(model, data, ids, tmp / "out", cfg, torch.device("cpu"), workers=workers)
    usage = resource.getrusage
    peak_kb = usage(resource.RUSAGE_SELF).ru_maxrss + usage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"images": len(ids), "workers": workers, "images_per_s": s["images_per_s"], "peak_mb": peak_kb / 1024}


def measure(root: Path, workers: int) -> dict:
    """In a fresh process, so peak memory is this configuration's own."""
    out = subprocess.run([sys.executable, __file__, "--one", str(root), str(workers)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(Path(a.one[0]), int(a.one[1]))))
        return
    small, large = make_data(a.images), make_data(a.images * 4)
    seq = measure(small, 0)
    pool = measure(small, a.workers)
    big = measure(large, a.workers)
    print(f"sequential loop      : {seq['images_per_s']:.1f} images/s  (baseline)")
    print(f"worker pool ({a.workers} procs): {pool['images_per_s']:.1f} images/s  "
          f"-> {pool['images_per_s'] / seq['images_per_s']:.2f}x the sequential loop")
    print(f"peak memory          : {pool['peak_mb']:.0f} MB at {a.images} images, "
          f"{big['peak_mb']:.0f} MB at {a.images * 4} images "
          f"(ratio {big['peak_mb'] / pool['peak_mb']:.2f})")


if __name__ == "__main__":
    main()
