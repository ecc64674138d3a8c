"""Training-step throughput in the paper's VOC setting (ResNet-50 DeepLabCAM, crop 320, batch 16,
generated 500x375 images) for this project's step vs a re-creation of the official code's step
(fp32, NCHW, an SGD whose poly LR is set inside step() as IRN's PolyOptimizer does). Both read
the same batches through the same loader; images/s of the steps alone, after warm-up steps.

On a CPU the two steps do the same arithmetic (mixed precision and channels_last apply on CUDA
only), so the ratio there is ~1 by construction; the project's speed-up is a GPU figure.

    .venv/bin/python benchmarks/train_throughput.py [--steps 3] [--batch 16] [--device auto] [--set KEY=VALUE ...]

``--set train.amp=false`` or ``--set runtime.compile=true`` measures this project's step with
mixed precision off or with torch.compile (params.yaml keys, as `dvc exp run -S` takes them).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


class PolySGD(torch.optim.SGD):
    """The official code's optimizer: SGD with momentum, lr = lr0 * (1 - step/max)^0.9 in step()."""

    def __init__(self, params, lr: float, weight_decay: float, max_step: int, momentum: float = 0.9):
        super().__init__(params, lr, momentum=momentum, weight_decay=weight_decay)
        self.global_step, self.max_step = 0, max_step
        self.initial_lr = [g["lr"] for g in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.max_step:
            mult = (1 - self.global_step / self.max_step) ** 0.9
            for g, lr0 in zip(self.param_groups, self.initial_lr):
                g["lr"] = lr0 * mult
        super().step(closure)
        self.global_step += 1


def make_data(n: int) -> Path:
    """``n`` 500x375 images with random shapes, image labels and masks, in the prepared layout."""
    from isim.data.prepared import VOC_CLASSES, write_labels, write_split
    root = Path(tempfile.mkdtemp()) / "prepared"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    from isim.io import write_label_png
    for i in range(n):
        img = rng.integers(0, 255, (375, 500, 3), np.uint8)
        mask = np.zeros((375, 500), np.uint8)
        c = int(rng.integers(1, len(VOC_CLASSES)))
        y, x = rng.integers(0, 200), rng.integers(0, 300)
        mask[y:y + 150, x:x + 180] = c
        img[mask > 0] //= 2
        Image.fromarray(img).save(root / "JPEGImages" / f"img{i:04d}.jpg", quality=90)
        write_label_png(root / "SegmentationClass" / f"img{i:04d}.png", mask)
        labels[f"img{i:04d}"] = [c]
    write_split(root, "train", list(labels))
    write_split(root, "val", list(labels)[:1])
    write_labels(root, VOC_CLASSES, labels, True)
    return root


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (after 1 warm-up step)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params.yaml override")
    a = p.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    import yaml

    from isim import settings
    from isim.config import from_dict, merged, overridden, parse_sets, with_preset
    from isim.data.prepared import Prepared
    from isim.runtime import resolve_device
    from isim.training.baseline import cam_engine
    raw = with_preset(yaml.safe_load((ROOT / "params.yaml").read_text()),
                      yaml.safe_load((ROOT / "pipelines/voc.yaml").read_text()))
    raw = merged(raw, {"encoder": {"pretrained": False}, "train": {"batch_size": a.batch, "epochs": 1},
                      "rounds": {"warmup_epochs": 0},
                      "runtime": {"device": a.device, "loader_workers": 2}, "tracking": {"enabled": False}})
    cfg = from_dict(overridden(raw, parse_sets(a.set)))
    device = resolve_device(a.device)
    data = Prepared.open(make_data(a.batch * (a.steps + 1)))

    def timed(step) -> float:
        torch.manual_seed(0)
        seen, t0 = 0, 0.0
        trainer.generator.manual_seed(0)
        for i, batch in enumerate(trainer.loader):
            if i == 1:  # the first step warms up allocators / cuDNN autotuning
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            step(batch)
            seen += len(batch["image"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen / (time.perf_counter() - t0)

    trainer = cam_engine(*settings.isim(cfg)[:2], data)
    trainer.dataset.set_pseudo(data.root / "SegmentationClass")
    # this project's step: the engine's (AMP dtype, channels_last, GradScaler as configured)
    ours = timed(trainer.step)

    trainer = cam_engine(*settings.isim(cfg)[:2], data)  # the same model, data and loader, official-style step
    trainer.dataset.set_pseudo(data.root / "SegmentationClass")
    model = trainer.model.to(memory_format=torch.contiguous_format)
    opt = PolySGD(model.param_groups(cfg.lr_encoder, cfg.lr_decoder, cfg.lr_classifier), cfg.lr_encoder,
                  cfg.train.weight_decay, max_step=1000)
    model.train()

    def official(b) -> None:
        x, y, m = b["image"].to(device), b["label"].to(device), b["mask"].to(device)
        out = model(x)
        loss = F.multilabel_soft_margin_loss(out.logits, y) + F.cross_entropy(out.seg, m, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()

    theirs = timed(official)
    amp = trainer.amp if trainer.amp is not None else "off"
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), ResNet-50 "
          f"DeepLabCAM, crop {cfg.transform.crop}, batch {a.batch}, 500x375 images")
    print(f"official-style step (fp32, NCHW, PolySGD): {theirs:.2f} images/s  (baseline)")
    print(f"this project's step (AMP {amp}, channels_last {trainer.channels_last}, compile {cfg.runtime.compile}): "
          f"{ours:.2f} images/s "
          f"-> {ours / theirs:.2f}x the official-style step")


if __name__ == "__main__":
    main()
