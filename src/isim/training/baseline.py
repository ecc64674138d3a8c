"""The CAM baseline: the encoder and classification branch trained on image labels only; its
task (multi-label classification, plus segmentation once pseudo masks exist) is ISIM's too."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from isim import distributed
from isim.data.datasets import TrainDataset
from isim.data.prepared import Prepared
from isim.models import ModelSpec, build_model, model_spec
from isim.models.net import ISIMNet, Output
from isim.runtime import seed_everything
from isim.settings import CamNet, Job
from isim.training.engine import Engine, EpochRecord, Step, Task, TrainingResult, segmentation_loss
from isim.training.recovery import Recovery


class _Forward(nn.Module):
    """The step's forward pass as one module call, so DistributedDataParallel sees it whether
    the epoch trains the classifier alone or the segmentation branch too."""

    def __init__(self, model: ISIMNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, joint: bool) -> Output:
        return self.model(x) if joint else self.model.classify(x)


class CamTask(Task):
    """The CAM baseline and ISIM: multi-label classification, plus segmentation on the pseudo
    masks once ``dataset`` has a round's (paper Eq. 1-3)."""

    lr_key = "lr_encoder"

    def __init__(self, model: ISIMNet, spec: ModelSpec, dataset: TrainDataset, lr_encoder: float,
                 lr_decoder: float, lr_classifier: float):
        has_decoder = model.decoder is not None
        super().__init__(model, spec, model.param_groups(lr_encoder, lr_decoder, lr_classifier))
        self.name = "ISIM" if has_decoder else "CAM baseline"
        self.find_unused = has_decoder  # warm-up epochs leave the decoder idle
        self.forward = _Forward(model)
        self.dataset = dataset

    def loss(self, forward: Any, x: torch.Tensor, batch: dict[str, Any], device: torch.device) -> Step:
        out = forward(x, self.dataset.pseudo_dir is not None)
        loss_cls = F.multilabel_soft_margin_loss(out.logits.float(), batch["label"].to(device, non_blocking=True))
        loss = loss_cls
        loss_seg = torch.zeros((), device=device)
        skipped = 0
        if out.seg is not None:
            valid = batch["seg_valid"].to(device)
            skipped = int((~valid).sum())
            loss_seg = segmentation_loss(out.seg, batch["mask"].to(device), valid)
            loss = loss + loss_seg
        return Step(loss, {"loss_cls": loss_cls.item(), "loss_seg": loss_seg.item()},
                    {"seg_skipped_images": skipped}, out.logits)


def cam_engine(job: Job, net: CamNet, data: Prepared) -> Engine:
    """The engine of the CAM baseline or ISIM on the train split."""
    spec = model_spec(net.encoder, net.model, data.n_classes)
    model = build_model(spec, net.encoder.pretrained, net.encoder.weights).to(job.device)
    dataset = TrainDataset(data, data.ids("train"), job.transform, seed=job.settings.seed)
    task = CamTask(model, spec, dataset, net.lr_encoder, net.lr_decoder, net.lr_classifier)
    return Engine(job, task, dataset)


def train_baseline(job: Job, net: CamNet, data: Prepared, checkpoint: Path,
                   on_epoch: Callable[[EpochRecord], None] | None = None, recovery: Recovery | None = None
                   ) -> TrainingResult:
    """Train for the job's epochs and save ``checkpoint``."""
    seed_everything(job.settings.seed)
    engine = cam_engine(job, net, data)
    t0 = time.perf_counter()
    engine.fit(on_epoch, recovery, round=0)  # the records' columns are ISIM's
    if distributed.is_main():
        engine.save(checkpoint, job.settings.epochs)
    return TrainingResult(engine.history, time.perf_counter() - t0, engine.model)
