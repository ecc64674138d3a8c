"""Random walk cost per image at 500x375 (paper-sized photos) and at 128 px (the embedded
images): seconds per image for AffinityNet's forward pass, building the sparse transition
matrix and the 2 ** exp_times steps; peak memory of a process walking N images, for two N
(it must not grow with the number of images). The baseline printed beside it: the CAM
inference of the same image with the same encoder, the step every pseudo-label set pays.

    .venv/bin/python benchmarks/random_walk.py [--images 4,16] [--backbone resnet50]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def walk_images(n: int, height: int, width: int, backbone: str) -> dict:
    """In this process: walk ``n`` random images with random CAMs of 2 classes."""
    import numpy as np
    import torch

    from isim.config import load
    from isim.models import build_model, model_spec
    from isim.models.affinitynet import affinity_spec, build_affinity
    from isim.pseudo.walk import RandomWalk

    torch.manual_seed(0)
    cfg = load(ROOT / "params.yaml")
    kwargs = {} if backbone != cfg.encoder.backbone else dict(cfg.encoder.backbone_kwargs)
    channels = cfg.affinity.feature_channels if kwargs else 448  # the params' own net, or PSA's width
    net = build_affinity(affinity_spec(backbone, kwargs, 16, channels)).eval()
    cam_net = build_model(model_spec(cfg.encoder.model_copy(update={"backbone": backbone, "backbone_kwargs": kwargs}),
                                     None, 21)).eval()
    if not kwargs:  # paper-sized: IRN's 2 ** 8 steps, the most any preset takes
        cfg = cfg.model_copy(update={"random_walk": cfg.random_walk.model_copy(update={"exp_times": 8})})
    walker = RandomWalk(net, cfg.transform, cfg.affinity.radius, cfg.random_walk, torch.device("cpu"))
    rng = np.random.default_rng(0)
    t_walk = t_cam = 0.0
    for _ in range(n):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        maps = rng.random((2, height, width), dtype=np.float32)
        t0 = time.perf_counter()
        walker({"rgb": rgb}, maps)
        t_walk += time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            cam_net.classify(torch.zeros(2, 3, height, width))  # one scale, image + flip
        t_cam += time.perf_counter() - t0
    return {"images": n, "walk_s_per_image": t_walk / n, "cam_s_per_image": t_cam / n,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="4,16", help="two dataset sizes for the peak-memory comparison")
    ap.add_argument("--backbone", default="resnet50", help="the paper's; the embedded run uses the params' own")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    if a.child:
        n, h, w = (int(x) for x in a.child.split(","))
        print(json.dumps(walk_images(n, h, w, a.backbone)))
        return
    sizes = [int(x) for x in a.images.split(",")]
    for label, (h, w), backbone in (("500x375", (375, 500), a.backbone), ("128 px", (128, 128), "resnet18")):
        rows = []
        for n in sizes:  # a fresh process per size: ru_maxrss is the whole run's peak
            out = subprocess.run([sys.executable, __file__, "--child", f"{n},{h},{w}", "--backbone", backbone],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        last = rows[-1]
        steps = "2 ** 8 steps" if backbone == a.backbone and label == "500x375" else "the params' steps"
        print(f"{label} ({backbone}, {steps}): random walk {last['walk_s_per_image']:.3f} s/image "
              f"(CAM inference, one scale + flip: {last['cam_s_per_image']:.3f} s/image; ratio "
              f"{last['walk_s_per_image'] / last['cam_s_per_image']:.2f}x)")
        print(f"  peak memory: {rows[0]['peak_mb']:.0f} MB at {rows[0]['images']} images, "
              f"{rows[-1]['peak_mb']:.0f} MB at {rows[-1]['images']} images "
              f"(target < 2048 MB per worker: {'met' if max(r['peak_mb'] for r in rows) < 2048 else 'NOT met'})")


if __name__ == "__main__":
    main()
