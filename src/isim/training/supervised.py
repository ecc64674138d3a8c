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
from isim.config import EncoderCfg
from isim.data.datasets import TrainDataset
from isim.data.prepared import Prepared
from isim.models import ModelError, ModelSpec, checkpoint_spec, read_checkpoint
from isim.models.segmenter import Segmenter, build_segmenter, segmenter_spec
from isim.models.spec import ENCODER_KEYS
from isim.runtime import seed_everything
from isim.settings import Job, SegmenterNet
from isim.training.engine import Engine, EpochRecord, Step, Task, TrainingResult, segmentation_loss
from isim.training.recovery import Recovery


class SegmenterTask(Task):
    """The final segmenter on a mask folder: ISIM's segmentation loss, nothing else."""

    name = "segmenter"

    def __init__(self, model: Segmenter, spec: ModelSpec, lr_encoder: float, lr_decoder: float):
        super().__init__(model, spec, model.param_groups(lr_encoder, lr_decoder))

    def loss(self, forward: Any, x: torch.Tensor, batch: dict[str, Any], device: torch.device) -> Step:
        valid = batch["seg_valid"].to(device)
        return Step(segmentation_loss(forward(x), batch["mask"].to(device), valid),
                    counts={"skipped_images": int((~valid).sum())})


def init_encoder(model: Segmenter, spec: ModelSpec, isim_checkpoint: Path) -> None:
    """Start ``model``'s encoder from the encoder of the ISIM model in ``isim_checkpoint``, which
    must be the same network (backbone, its settings and output stride)."""
    state = read_checkpoint(isim_checkpoint)
    theirs = checkpoint_spec(state, isim_checkpoint)
    for key in theirs.differences(spec, ENCODER_KEYS):
        raise ModelError(f"{isim_checkpoint}: its encoder has {key} {getattr(theirs, key)!r}, the segmenter's "
                         f"{getattr(spec, key)!r}; segmenter.init: isim needs the same encoder")
    enc = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
    model.encoder.load_state_dict(enc)


def train_segmenter(job: Job, segmenter: SegmenterNet, encoder: EncoderCfg, data: Prepared, masks_dir: Path,
                    checkpoint: Path, on_epoch: Callable[[EpochRecord], None] | None = None,
                    trained_on: dict[str, Any] | None = None, recovery: Recovery | None = None,
                    init_from: Path | None = None) -> TrainingResult:
    """Train on the masks in ``masks_dir`` (train split); save ``checkpoint`` (with ``trained_on``,
    what those masks are). ``init_from``: an ISIM checkpoint whose encoder the segmenter starts
    from (``segmenter.init: isim``)."""
    seed_everything(job.settings.seed)
    sc, enc = segmenter, encoder
    spec = segmenter_spec(sc.arch, data.n_classes, enc.backbone, enc.backbone_kwargs, enc.output_stride,
                          sc.decoder_channels)
    model = build_segmenter(spec, enc.pretrained and init_from is None, enc.weights if init_from is None else "")
    if init_from is not None:
        init_encoder(model, spec, init_from)
    model = model.to(job.device)
    dataset = TrainDataset(data, data.ids("train"), job.transform, seed=job.settings.seed)
    dataset.set_pseudo(masks_dir)
    engine = Engine(job, SegmenterTask(model, spec, sc.lr_encoder, sc.lr_decoder), dataset)
    t_start = time.perf_counter()
    engine.fit(on_epoch, recovery)
    if distributed.is_main():
        engine.save(checkpoint, job.settings.epochs, trained_on=trained_on)
    return TrainingResult(engine.history, time.perf_counter() - t_start, engine.model)
