"""Random walk (PSA / IRN): the ISIM CAMs propagated over AffinityNet's affinities.

On the stride-8 grid, every cell is joined to the cells within ``affinity.radius`` with weight
``affinity ** beta`` (and to itself with 1). The transition matrix ``T = W D^-1`` averages a
cell's neighbours; the CAMs walk ``2 ** exp_times`` steps (IRN squares T ``exp_times`` times,
the same product), which spreads them across an object and stops where affinities are low,
at its boundary. The walked maps are upsampled, divided by their maximum, and thresholded
against ``random_walk.bg_threshold`` like any CAMs, then refined with CRF: a round directory
(raw/, crf/, summary.json) as pseudo/masks.py writes it.

T is sparse (about ``2 x len(pair_offsets) + 1`` entries per cell), so memory per image grows
with the image, never with the dataset.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from isim.config import Config, RandomWalkCfg, TransformCfg
from isim.data.datasets import normalize
from isim.models.affinitynet import AffinityNet, pair_offsets


def transition(feats: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """T transposed (sparse, N x N for N = h x w cells of ``feats`` D x h x w), so that
    ``T.t() @ x`` is one step of the walk for x N x K."""
    _, h, w = feats.shape
    idx = torch.arange(h * w).view(h, w)
    rows, cols, vals = [idx.flatten()], [idx.flatten()], [torch.ones(h * w)]
    for dy, dx in pair_offsets(radius):
        if dy >= h or abs(dx) >= w:
            continue
        # cells (y, x) whose partner (y + dy, x + dx) is on the grid
        a0, a1 = max(0, -dx), w - max(0, dx)
        src, dst = feats[:, :h - dy, a0:a1], feats[:, dy:, a0 + dx:a1 + dx]
        a = torch.exp(-(src - dst).abs().mean(0)).pow(beta).flatten()
        i, j = idx[:h - dy, a0:a1].flatten(), idx[dy:, a0 + dx:a1 + dx].flatten()
        rows += [i, j]
        cols += [j, i]
        vals += [a, a]
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    degree = torch.zeros(h * w).index_add_(0, c, v)  # column sums of W
    tt = torch.sparse_coo_tensor(torch.stack([c, r]), v / degree[c], (h * w, h * w), check_invariants=False)
    return tt.coalesce()


def walk(seeds: torch.Tensor, tt: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` steps of the walk of ``seeds`` K x h x w."""
    k, h, w = seeds.shape
    x = seeds.reshape(k, h * w).t().contiguous()
    for _ in range(steps):
        x = torch.sparse.mm(tt, x)
    return x.t().reshape(k, h, w)


class RandomWalk:
    """``propagate(item, maps)`` for pseudo/masks.generate: full-size normalised CAMs in, walked
    maps (scaled to a maximum of 1) out."""

    def __init__(self, net: AffinityNet, transform: TransformCfg, radius: int, rw: RandomWalkCfg,
                 device: torch.device):
        """``radius``: AffinityNet's pair radius (affinity.radius); ``rw``: beta and exp_times."""
        self.net, self.transform, self.radius, self.rw, self.device = net.eval(), transform, radius, rw, device

    @classmethod
    def of(cls, net: AffinityNet, cfg: Config, device: torch.device) -> RandomWalk:
        return cls(net, cfg.transform, cfg.affinity.radius, cfg.random_walk, device)

    @torch.no_grad()
    def __call__(self, item: dict, maps: np.ndarray) -> np.ndarray:
        if len(maps) == 0:  # no class in the image: nothing to walk
            return maps
        x = normalize(np.ascontiguousarray(item["rgb"]), self.transform)[None].to(self.device)
        feats = self.net(x)[0].float().cpu()
        size = maps.shape[-2:]
        seeds = F.adaptive_avg_pool2d(torch.from_numpy(maps)[None], feats.shape[-2:])[0]
        walked = walk(seeds, transition(feats, self.radius, self.rw.beta), 2 ** self.rw.exp_times)
        up = F.interpolate(walked[None], size=size, mode="bilinear", align_corners=False)[0]
        return (up / up.max().clamp(min=1e-5)).numpy().astype(np.float32)
