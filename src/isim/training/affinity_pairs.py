"""AffinityNet training (PSA; paper 4.1.6): pixel pairs of the affinity labels within
``affinity.radius`` on the stride-8 grid. Pairs with the same label should have affinity 1,
pairs with different labels 0; pairs touching an ignored pixel teach nothing. The three kinds
are balanced as PSA and IRN do: background pairs 1/4, object pairs 1/4, cross pairs 1/2."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isim import distributed
from isim.config import AffinityCfg, EncoderCfg, TransformCfg
from isim.data.datasets import TrainDataset, normalize
from isim.data.prepared import Prepared
from isim.io import IGNORE, read_image, read_label_png
from isim.models.affinitynet import AffinityNet, affinity, affinity_spec, build_affinity, cell_labels, crop_pairs
from isim.models.spec import ModelSpec
from isim.runtime import seed_everything
from isim.settings import Job
from isim.training.engine import Engine, EpochRecord, Step, Task, TrainingResult
from isim.training.recovery import Recovery


def _mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The mean over the pairs ``where`` holds, of the global batch when several ranks train
    (this rank's sum over all ranks' count, times the rank count: DDP averages the gradients)."""
    if distributed.active():
        n = int(distributed.all_sum(np.array([int(where.sum())]))[0])
        return (x * where).sum() * (distributed.world() / max(1, n))
    return (x * where).sum() / where.sum().clamp(min=1)


def pair_kinds(mask: torch.Tensor, grid: tuple[int, ...], radius: int, purity: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of :func:`crop_pairs` on the ``grid`` (h, w) that labels ``mask`` B x H x W (255
    ignored) teach, as boolean B x P x h' x w': background-background, object-object (same
    class), and different labels. Each cell's label is its block's (:func:`cell_labels`)."""
    labels = cell_labels(mask, grid, purity)[:, None]
    src, dst = (t[:, 0] for t in crop_pairs(labels, radius))  # B x 1 x h' x w', B x P x h' x w'
    valid = (src != IGNORE) & (dst != IGNORE)
    same = valid & (src == dst)
    return same & (src == 0), same & (src > 0), valid & (src != dst)


def affinity_loss(aff: torch.Tensor, mask: torch.Tensor, grid: tuple[int, ...], radius: int, purity: float = 0.0
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """``aff`` B x P x h' x w' from :func:`crop_pairs` of features on the ``grid`` (h, w);
    ``mask`` B x H x W labels (255 ignored), brought to the grid as :func:`pair_kinds` says."""
    bg_pos, fg_pos, neg = pair_kinds(mask, grid, radius, purity)
    pos_term = -torch.log(aff + 1e-5)
    parts = {"bg_pos": _mean(pos_term, bg_pos), "fg_pos": _mean(pos_term, fg_pos),
             "neg": _mean(-torch.log(1 + 1e-5 - aff), neg)}
    loss = parts["bg_pos"] / 4 + parts["fg_pos"] / 4 + parts["neg"] / 2
    return loss, {k: float(v.detach()) for k, v in parts.items()}


class AffinityTask(Task):
    """AffinityNet on the affinity labels: the pair loss above on the net's stride-8 features."""

    name = "AffinityNet"

    def __init__(self, model: AffinityNet, spec: ModelSpec, lr: float, radius: int, purity: float):
        super().__init__(model, spec, model.param_groups(lr))
        self.radius, self.purity = radius, purity

    def loss(self, forward: Any, x: torch.Tensor, batch: dict[str, Any], device: torch.device) -> Step:
        feats = forward(x).float()
        loss, parts = affinity_loss(affinity(*crop_pairs(feats, self.radius)), batch["mask"].to(device),
                                    tuple(feats.shape[-2:]), self.radius, self.purity)
        return Step(loss, dict(parts))


@dataclass(frozen=True)
class PairProbe:
    """How right AffinityNet's affinities are where the truth is known: on the ground-truth masks
    of ``ids`` (the holdout images, never trained on), the share of background-background,
    object-object and different-label pairs of cells within ``radius`` whose affinity is on the
    right side of 0.5 (percent), and the mean affinity of each kind."""

    data: Prepared
    ids: list[str]
    transform: TransformCfg
    radius: int
    purity: float

    @cached_property
    def images(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised image, ground truth) of every id, read once for all epochs."""
        return [(normalize(read_image(self.data.image_path(i)), self.transform)[None],
                 torch.from_numpy(read_label_png(self.data.mask_path(i), self.data.n_classes).astype(np.int64)))
                for i in self.ids]

    @torch.no_grad()
    def __call__(self, net: AffinityNet, device: torch.device) -> dict[str, float]:
        was_training = net.training
        net.eval()
        hits = {"bg": 0, "fg": 0, "neg": 0}
        sums = {"bg": 0.0, "fg": 0.0, "neg": 0.0}
        counts = {"bg": 0, "fg": 0, "neg": 0}
        try:
            for x, gt in self.images:
                feats = net(x.to(device)).float().cpu()
                grid = tuple(feats.shape[-2:])
                if grid[0] < self.radius or grid[1] < 2 * self.radius - 1:
                    continue
                aff = affinity(*crop_pairs(feats, self.radius))
                for kind, where in zip(("bg", "fg", "neg"), pair_kinds(gt[None], grid, self.radius, self.purity)):
                    a = aff[where]
                    counts[kind] += a.numel()
                    sums[kind] += float(a.sum())
                    hits[kind] += int(((a < 0.5) if kind == "neg" else (a >= 0.5)).sum())
        finally:
            net.train(was_training)
        out: dict[str, float] = {}
        for k in hits:
            if counts[k]:
                out[f"pair_acc_{k}"] = round(100 * hits[k] / counts[k], 3)
                out[f"pair_mean_{k}"] = round(sums[k] / counts[k], 4)
        return out


def train_affinity(job: Job, affinity: AffinityCfg, encoder: EncoderCfg, data: Prepared, labels_dir: Path,
                   checkpoint: Path, on_epoch: Callable[[EpochRecord], None] | None = None,
                   recovery: Recovery | None = None, probe: PairProbe | None = None) -> TrainingResult:
    """Train AffinityNet on the affinity labels in ``labels_dir``; save ``checkpoint``. With a
    ``probe``, every epoch's record carries its pair accuracies on the ground truth."""
    seed_everything(job.settings.seed)
    ac, enc, device = affinity, encoder, job.device
    spec = affinity_spec(enc.backbone, enc.backbone_kwargs, enc.output_stride, ac.feature_channels)
    model = build_affinity(spec, enc.pretrained, enc.weights).to(device)
    dataset = TrainDataset(data, data.ids("train"), job.transform, seed=job.settings.seed)
    dataset.set_pseudo(labels_dir)
    engine = Engine(job, AffinityTask(model, spec, ac.lr, ac.radius, ac.cell_purity), dataset)
    t_start = time.perf_counter()
    engine.fit(on_epoch, recovery, measure=(lambda: probe(model, device)) if probe is not None else None)
    if distributed.is_main():
        engine.save(checkpoint, job.settings.epochs)
    return TrainingResult(engine.history, time.perf_counter() - t_start, engine.model)
