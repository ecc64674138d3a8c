"""Heads: ISIM's classification branch (which also gives the CAMs) and the segmentation head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CAMHead(nn.Module):
    """GAP + bias-free 1x1 conv over foreground classes. GAP and the 1x1 conv commute, so the
    logits are the spatial mean of the CAM: the CAM comes from exactly the weights that classify."""

    def __init__(self, in_channels: int, n_foreground: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_foreground, 1, bias=False)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits B x C, CAM B x C x h x w)."""
        cam = self.conv(feat)
        return cam.mean(dim=(2, 3)), cam


class SegmentationHead(nn.Module):
    """1x1 conv to class scores (background included), upsampled to the input size."""

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)
