"""AffinityNet (PSA, Ahn & Kwak 2018): class-agnostic affinities between nearby pixels.

A timm encoder's feature levels are projected, brought to the stride-8 grid and fused into one
feature map ``f``; the affinity of grid cells i and j is ``exp(-mean |f_i - f_j|)``, in (0, 1].
Pairs are taken within ``radius`` cells, each unordered pair once (a half disc of offsets).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from isim.io import IGNORE
from isim.models.encoder import build_encoder
from isim.models.spec import ModelSpec

STRIDE = 8


def pair_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) of the cells paired with a cell: distance < radius, each unordered pair once."""
    return [(dy, dx) for dy in range(radius) for dx in range(-radius + 1, radius)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius]


def crop_pairs(t: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` (B x C x h x w) at the cells of the region whose every pair lies inside the grid:
    (source B x C x 1 x h' x w', partners B x C x P x h' x w') with P = len(pair_offsets)."""
    r = radius - 1
    h, w = t.shape[-2:]
    ch, cw = h - r, w - 2 * r
    if ch < 1 or cw < 1:
        raise ValueError(f"a {h}x{w} grid is too small for affinity.radius={radius}: the training crop "
                         f"must be at least {STRIDE * (2 * r + 1)} px")
    src = t[:, :, :ch, r:r + cw]
    dst = torch.stack([t[:, :, dy:dy + ch, r + dx:r + dx + cw] for dy, dx in pair_offsets(radius)], 2)
    return src.unsqueeze(2), dst


def cell_labels(mask: torch.Tensor, grid: tuple[int, ...], purity: float) -> torch.Tensor:
    """Labels B x H x W (255 ignored) brought to the feature ``grid`` (h, w), one block of pixels
    per cell: the label at least ``purity`` of the block's pixels carry, 255 where none does
    (a block across a boundary or mostly unlabelled teaches nothing); ``purity`` 0 takes the
    block's most frequent label (PSA). Nearest sampling would read one pixel at a block's corner,
    half a cell away from the cell the features describe."""
    best = torch.zeros((mask.shape[0], *grid), device=mask.device)
    out = torch.full((mask.shape[0], *grid), IGNORE, dtype=torch.long, device=mask.device)
    for v in mask.unique().tolist():
        if v == IGNORE:
            continue
        share = F.adaptive_avg_pool2d((mask == v).float()[:, None], (grid[0], grid[1]))[:, 0]
        take = share > best
        out[take] = v
        best = torch.maximum(best, share)
    out[(best < purity) | (best == 0)] = IGNORE
    return out


def affinity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """exp(-mean L1 distance) over the channel dimension (dim 1)."""
    return torch.exp(-(src - dst).abs().mean(1))


class AffinityNet(nn.Module):
    def __init__(self, encoder: nn.Module, channels: int):
        super().__init__()
        self.encoder = encoder
        info: Any = encoder.feature_info
        # PSA gives deeper levels more channels (64 / 128 / 256 of 448); here 1/8, 1/4, 1/4, 3/8
        widths = [channels // 8, channels // 4, channels // 4]
        widths.append(channels - sum(widths))
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, w, 1, bias=False), nn.GroupNorm(math.gcd(4, w), w), nn.ReLU(inplace=True))
            for c, w in zip(info.channels(), widths))
        self.fuse = nn.Conv2d(channels, channels, 1, bias=False)
        self.grid_level = info.reduction().index(STRIDE)  # the level whose grid every level is brought to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features B x channels x h x w on the stride-8 grid."""
        feats = self.encoder(x)
        size = feats[self.grid_level].shape[-2:]
        levels = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size
                  else p(f) for p, f in zip(self.project, feats)]
        return self.fuse(torch.cat(levels, 1))

    def param_groups(self, lr: float) -> list[dict]:
        """Pretrained encoder at ``lr``, the new projection and fusion layers at 10x (PSA)."""
        new = list(self.project.parameters()) + list(self.fuse.parameters())
        return [{"name": "encoder", "params": list(self.encoder.parameters()), "lr": lr},
                {"name": "affinity", "params": new, "lr": 10 * lr}]


def affinity_spec(backbone: str, backbone_kwargs: dict[str, Any], output_stride: int, channels: int) -> ModelSpec:
    return ModelSpec("affinitynet", backbone, output_stride, dict(backbone_kwargs), feature_channels=channels)


def build_affinity(spec: ModelSpec, pretrained: bool = False, weights: str = "") -> AffinityNet:
    encoder = build_encoder(spec.backbone, spec.backbone_kwargs, spec.output_stride, pretrained, weights)
    return AffinityNet(encoder, spec.feature_channels)
