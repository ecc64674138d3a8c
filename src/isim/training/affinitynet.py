"""AffinityNet training (PSA; paper 4.1.6): pixel pairs of the affinity labels within
``affinity.radius`` on the stride-8 grid. Pairs with the same label should have affinity 1,
pairs with different labels 0; pairs touching an ignored pixel teach nothing. The three kinds
are balanced as PSA and IRN do: background pairs 1/4, object pairs 1/4, cross pairs 1/2."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isim import distributed
from isim.config import Config
from isim.data.datasets import TrainDataset
from isim.data.layout import Prepared
from isim.io import IGNORE
from isim.models.affinitynet import AffinityNet, affinity, affinity_spec, build_affinity, crop_pairs
from isim.runtime import seed_everything, setup
from isim.training.engine import Engine, Settings, Step, Task, TrainingResult
from isim.training.recovery import Recovery


def _mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The mean over the pairs ``where`` holds, of the global batch when several ranks train
    (this rank's sum over all ranks' count, times the rank count: DDP averages the gradients)."""
    if distributed.active():
        n = int(distributed.all_sum(np.array([int(where.sum())]))[0])
        return (x * where).sum() * (distributed.world() / max(1, n))
    return (x * where).sum() / where.sum().clamp(min=1)


def affinity_loss(aff: torch.Tensor, mask: torch.Tensor, grid: tuple[int, ...], radius: int
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """``aff`` B x P x h' x w' from :func:`crop_pairs` of features on the ``grid`` (h, w);
    ``mask`` B x H x W labels (255 ignored), brought to the grid by nearest neighbour."""
    labels = F.interpolate(mask[:, None].float(), size=grid, mode="nearest").long()
    src, dst = (t[:, 0] for t in crop_pairs(labels, radius))  # B x 1 x h' x w', B x P x h' x w'
    valid = (src != IGNORE) & (dst != IGNORE)
    same = valid & (src == dst)
    bg_pos, fg_pos, neg = same & (src == 0), same & (src > 0), valid & (src != dst)
    pos_term = -torch.log(aff + 1e-5)
    parts = {"bg_pos": _mean(pos_term, bg_pos), "fg_pos": _mean(pos_term, fg_pos),
             "neg": _mean(-torch.log(1 + 1e-5 - aff), neg)}
    loss = parts["bg_pos"] / 4 + parts["fg_pos"] / 4 + parts["neg"] / 2
    return loss, {k: float(v.detach()) for k, v in parts.items()}


class AffinityTask(Task):
    """AffinityNet on the affinity labels: the pair loss above on the net's stride-8 features."""

    name = "AffinityNet"

    def __init__(self, model: AffinityNet, spec: dict[str, Any], lr: float, radius: int):
        super().__init__(model, spec, model.param_groups(lr))
        self.radius = radius

    def loss(self, forward: Any, x: torch.Tensor, batch: dict[str, Any], device: torch.device) -> Step:
        feats = forward(x).float()
        loss, parts = affinity_loss(affinity(*crop_pairs(feats, self.radius)), batch["mask"].to(device),
                                    tuple(feats.shape[-2:]), self.radius)
        return Step(loss, dict(parts))


def train_affinity(cfg: Config, data: Prepared, labels_dir: Path, checkpoint: Path,
                   on_epoch: Callable[[dict], None] | None = None, recovery: Recovery | None = None
                   ) -> TrainingResult:
    """Train AffinityNet on the affinity labels in ``labels_dir``; save ``checkpoint``."""
    seed_everything(cfg.seed)
    device = setup(cfg.runtime)
    ac, enc = cfg.affinity, cfg.encoder
    spec = affinity_spec(enc.backbone, enc.backbone_kwargs, enc.output_stride, ac.feature_channels)
    model = build_affinity(spec, enc.pretrained, enc.weights).to(device)
    dataset = TrainDataset(data, data.ids("train"), cfg.transform, seed=cfg.seed)
    dataset.set_pseudo(labels_dir)
    engine = Engine(AffinityTask(model, spec, ac.lr, ac.radius), Settings.of(cfg, ac.epochs, ac.batch_size),
                    dataset, device, cfg.to_dict())
    t_start = time.perf_counter()
    engine.fit(on_epoch, recovery)
    if distributed.is_main():
        engine.save(checkpoint, ac.epochs)
    return TrainingResult(engine.history, time.perf_counter() - t_start, engine.model)
