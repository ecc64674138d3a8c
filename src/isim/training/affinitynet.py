"""AffinityNet training (PSA; paper 4.1.6): pixel pairs of the affinity labels within
``affinity.radius`` on the stride-8 grid. Pairs with the same label should have affinity 1,
pairs with different labels 0; pairs touching an ignored pixel teach nothing. The three kinds
are balanced as PSA and IRN do: background pairs 1/4, object pairs 1/4, cross pairs 1/2."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from isim.config import Config
from isim.data.layout import Prepared
from isim.io import IGNORE
from isim.models.affinitynet import affinity, affinity_spec, build_affinity, crop_pairs
from isim.models.encoder import train_mode
from isim.runtime import seed_everything, setup
from isim.training.checkpoint import save_checkpoint
from isim.training.loop import MaskTraining

log = logging.getLogger(__name__)


def _mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
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


def train_affinity(cfg: Config, data: Prepared, labels_dir: Path, checkpoint: Path,
                   on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train AffinityNet on the affinity labels in ``labels_dir``; save ``checkpoint``.
    Returns {history, seconds, model}."""
    seed_everything(cfg.seed)
    device = setup(cfg.runtime)
    ac, enc = cfg.affinity, cfg.encoder
    spec = affinity_spec(enc.backbone, enc.backbone_kwargs, enc.output_stride, ac.feature_channels)
    model = build_affinity(spec, enc.pretrained, enc.weights).to(device)
    run = MaskTraining(cfg, data, labels_dir, model.param_groups(ac.lr), ac.epochs, ac.batch_size, device)
    history: list[dict] = []
    t_start = time.perf_counter()
    for epoch in range(1, ac.epochs + 1):
        train_mode(model, enc.freeze_bn)
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "bg_pos": 0.0, "fg_pos": 0.0, "neg": 0.0}
        n = 0
        for batch in run.batches(epoch):
            feats = model(batch["image"].to(device, non_blocking=True)).float()
            loss, parts = affinity_loss(affinity(*crop_pairs(feats, ac.radius)), batch["mask"].to(device),
                                        tuple(feats.shape[-2:]), ac.radius)
            run.step(loss, f"AffinityNet epoch {epoch}")
            sums["loss"] += loss.item()
            for k, v in parts.items():
                sums[k] += v
            n += 1
        rec = {**{k: v / max(1, n) for k, v in sums.items()}, "epoch": epoch,
               "seconds": round(time.perf_counter() - t0, 3), "lr": run.opt.param_groups[0]["lr"]}
        history.append(rec)
        log.info("AffinityNet epoch %d/%d loss %.4f (bg %.4f fg %.4f neg %.4f) %.1fs", epoch, ac.epochs,
                 rec["loss"], rec["bg_pos"], rec["fg_pos"], rec["neg"], rec["seconds"])
        if on_epoch:
            on_epoch(rec)
    save_checkpoint(checkpoint, spec, model, run.opt, run.sched, ac.epochs, 0, history, cfg.to_dict(), data.classes)
    return {"history": history, "seconds": time.perf_counter() - t_start, "model": model}
