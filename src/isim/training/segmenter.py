"""The final segmenter (paper 4.1.7): a DeepLab net trained on the random-walk pseudo masks
as if they were ground truth. Images whose pseudo mask is all background teach nothing (the
same rule as ISIM's segmentation loss)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from isim import distributed
from isim.config import Config
from isim.data.datasets import TrainDataset
from isim.data.layout import Prepared
from isim.models.segmenter import Segmenter, build_segmenter, segmenter_spec
from isim.runtime import seed_everything, setup
from isim.training.engine import Engine, Settings, Step, Task, TrainingResult, segmentation_loss
from isim.training.recovery import Recovery


class SegmenterTask(Task):
    """The final segmenter on a mask folder: ISIM's segmentation loss, nothing else."""

    name = "segmenter"

    def __init__(self, model: Segmenter, spec: dict[str, Any], lr_encoder: float, lr_decoder: float):
        super().__init__(model, spec, model.param_groups(lr_encoder, lr_decoder))

    def loss(self, forward: Any, x: torch.Tensor, batch: dict[str, Any], device: torch.device) -> Step:
        valid = batch["seg_valid"].to(device)
        return Step(segmentation_loss(forward(x), batch["mask"].to(device), valid),
                    counts={"skipped_images": int((~valid).sum())})


def train_segmenter(cfg: Config, data: Prepared, masks_dir: Path, checkpoint: Path,
                    on_epoch: Callable[[dict], None] | None = None, trained_on: dict[str, Any] | None = None,
                    recovery: Recovery | None = None) -> TrainingResult:
    """Train on the masks in ``masks_dir`` (train split); save ``checkpoint`` (with ``trained_on``,
    what those masks are)."""
    seed_everything(cfg.seed)
    device = setup(cfg.runtime)
    sc, enc = cfg.segmenter, cfg.encoder
    spec = segmenter_spec(sc.arch, data.n_classes, enc.backbone, enc.backbone_kwargs, enc.output_stride,
                          sc.decoder_channels)
    model = build_segmenter(spec, enc.pretrained, enc.weights).to(device)
    dataset = TrainDataset(data, data.ids("train"), cfg.transform, seed=cfg.seed)
    dataset.set_pseudo(masks_dir)
    engine = Engine(SegmenterTask(model, spec, sc.lr_encoder, sc.lr_decoder),
                    Settings.of(cfg, sc.epochs, sc.batch_size), dataset, device, cfg.to_dict())
    t_start = time.perf_counter()
    engine.fit(on_epoch, recovery)
    if distributed.is_main():
        engine.save(checkpoint, sc.epochs, trained_on=trained_on)
    return TrainingResult(engine.history, time.perf_counter() - t_start, engine.model)
