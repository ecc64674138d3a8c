"""`isim predict` throughput on CPU: images/s end to end (read, multi-scale + flip inference,
palette PNG + overlay JPEG written, and with --crf dense CRF), at 128 px with the params' own
final segmenter and at 500x375 with the paper's (DeepLabv3, ResNet-50). Baselines printed
beside it, same run: the same command one image at a time in one process (batch 1, no worker
pool), and the model's forward passes alone for the same scales (so the ratio is what reading,
CRF and writing cost).

    .venv/bin/python benchmarks/predict.py [--images 128] [--photos 8] [--backbone resnet50] [--crf]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def checkpoint(folder: Path, backbone: str, kwargs: dict, channels: int, scales: list[float]) -> Path:
    from isim.config import load
    from isim.models.segmenter import build_segmenter, segmenter_spec
    from isim.training.checkpoint import save_checkpoint
    cfg = load(ROOT / "params.yaml")
    cfg = cfg.model_copy(update={"segmenter": cfg.segmenter.model_copy(update={"scales": scales})})
    spec = segmenter_spec("deeplabv3", 21, backbone, kwargs, 16, channels)
    torch.manual_seed(0)  # the same untrained model every run, so --crf refines the same masks
    model = build_segmenter(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = folder / "segmenter.pt"
    save_checkpoint(path, spec, model, opt, torch.optim.lr_scheduler.StepLR(opt, 1), 1, 0, [], cfg.to_dict())
    return path


def measure(label: str, size: tuple[int, int], backbone: str, kwargs: dict, channels: int, n: int,
            crf: bool) -> None:
    from isim.inference import Predictor, predict
    work = Path(tempfile.mkdtemp())
    scales = [1.0, 0.5, 1.5]
    ck = checkpoint(work, backbone, kwargs, channels, scales)
    rng = np.random.default_rng(0)
    (work / "in").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(work / "in" / f"{i:03d}.jpg")
    predict(ck, sorted((work / "in").iterdir())[:2], work / "warm-up", crf=crf, workers=0)  # first-call costs
    rates = {}
    for name, batch, workers in (("batched", 8, 2), ("one at a time", 1, 0)):
        t0 = time.perf_counter()
        predict(ck, [work / "in"], work / name.replace(" ", "_"), crf=crf, batch_size=batch, workers=workers)
        rates[name] = n / (time.perf_counter() - t0)
    p = Predictor(ck)
    x = torch.zeros(2, 3, size[1], size[0])
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(n):
            for s in scales:
                p.model(torch.nn.functional.interpolate(x, scale_factor=s) if s != 1.0 else x)
    forward = n / (time.perf_counter() - t0)
    batched, single = rates["batched"], rates["one at a time"]
    print(f"{label} ({backbone}, scales {scales} + flips{', CRF' if crf else ''}): isim predict "
          f"{batched:.2f} images/s (defaults: batch up to 8, 2 workers); one at a time {single:.2f} images/s "
          f"(ratio {batched / single:.2f}); forward passes alone {forward:.2f} images/s "
          f"(ratio {batched / forward:.2f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=128, help="128 px images")
    ap.add_argument("--photos", type=int, default=8, help="500x375 photos")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--crf", action="store_true", help="with dense CRF (isim predict --crf)")
    a = ap.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    from isim.config import load
    cfg = load(ROOT / "params.yaml")
    measure("128 px", (128, 128), cfg.encoder.backbone, dict(cfg.encoder.backbone_kwargs),
            cfg.segmenter.decoder_channels, a.images, a.crf)
    measure("500x375", (500, 375), a.backbone, {}, 256, a.photos, a.crf)


if __name__ == "__main__":
    main()
