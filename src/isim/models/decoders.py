"""Decoders of ISIM's segmentation branch: DeepLabv3 (ASPP) and UNet. Each maps the encoder's
feature levels to a ``channels``-wide map; the segmentation head is kept apart."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DeepLabV3Decoder(nn.Module):
    """ASPP (rates 6/12/18, torchvision's) + a 3x3 conv on the last feature level."""

    def __init__(self, chans: list[int], reductions: list[int], channels: int):
        super().__init__()
        self.aspp = ASPP(chans[-1], [6, 12, 18], channels)
        self.conv = _conv_bn(channels, channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(self.aspp(feats[-1]))


class UNetDecoder(nn.Module):
    """UNet decoder over the encoder's 4 feature levels, skip connections kept.
    ``learnable`` upsamples with transposed convs, otherwise bilinearly (no upsampling weights).
    Levels at the same resolution (the dilated last stage) are joined with a 1x1 conv."""

    def __init__(self, chans: list[int], reductions: list[int], channels: int, learnable: bool = True):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        prev, prev_red = chans[-1], reductions[-1]
        for skip, red in zip(reversed(chans[:-1]), reversed(reductions[:-1])):
            doubling = learnable and prev_red == 2 * red
            self.ups.append(nn.ConvTranspose2d(prev, channels, 2, stride=2) if doubling
                            else nn.Conv2d(prev, channels, 1))
            self.blocks.append(nn.Sequential(_conv_bn(channels + skip, channels), _conv_bn(channels, channels)))
            prev, prev_red = channels, red

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1])):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # bilinear variant, or odd input sizes
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return x
