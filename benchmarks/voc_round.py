"""One ISIM round in the paper's VOC setting (pipelines/voc.yaml: ResNet-50 DeepLabCAM, crop 320,
batch 16, CAMs at 4 scales, CRF for ~500 px photos) on generated 500x375 images: one training
epoch, then one regeneration of the pseudo masks, each timed; then the projected time of one VOC
round (``crf_freq`` epochs over the 10,582 train_aug images, then their regeneration).

The images are random shapes, so the masks mean nothing; the figure is time. Encoder weights are
random (no download), which costs the same arithmetic as ImageNet ones.

    .venv/bin/python benchmarks/voc_round.py [--images 64] [--device auto]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from isim import settings

ROOT = Path(__file__).resolve().parents[1]
VOC_TRAIN_AUG = 10582
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=64, help="generated 500x375 training images")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    from isim.config import from_dict, merged, with_preset
    from isim.data.prepared import Prepared
    from isim.runtime import resolve_device
    from isim.training.isim import train_isim
    from train_throughput import make_data
    voc = yaml.safe_load((ROOT / "pipelines/voc.yaml").read_text())
    raw = with_preset(yaml.safe_load((ROOT / "params.yaml").read_text()), voc)
    raw = merged(raw, {"encoder": {"pretrained": False}, "train": {"epochs": 1}, "rounds": {"warmup_epochs": 0},
                       "crf_freq": 1, "runtime": {"device": a.device}, "tracking": {"enabled": False}})
    cfg = from_dict(raw)
    data = Prepared.open(make_data(a.images))
    out = Path(tempfile.mkdtemp())
    result = train_isim(*settings.isim(cfg), data, out / "checkpoints", out / "pseudo")
    epoch_s = result.history[-1].seconds / a.images
    regen = result.rounds[-1]
    regen_s = 1.0 / float(regen.images_per_s)
    epochs_per_round = int(voc["crf_freq"])
    round_s = VOC_TRAIN_AUG * (epochs_per_round * epoch_s + regen_s)
    print(f"device {resolve_device(a.device)}: {a.images} generated 500x375 images, the VOC preset")
    print(f"training epoch: {epoch_s * 1000:.1f} ms per image; regeneration: {regen_s * 1000:.1f} ms per image "
          f"({regen.images_per_s:.2f} images/s)")
    print(f"one VOC round projected: {epochs_per_round} epochs + regeneration of {VOC_TRAIN_AUG} images "
          f"= {round_s / 60:.1f} min ({100 * VOC_TRAIN_AUG * regen_s / round_s:.0f}% of it regeneration)")


if __name__ == "__main__":
    main()
