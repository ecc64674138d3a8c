"""The final segmentation model (paper 4.1.7, Tables 8-11): trained on the random-walk pseudo
masks like a fully supervised net. DeepLabv3 (ASPP + image pooling, torchvision's block) or
DeepLabv2 (the sum of four dilated 3x3 convs straight to class scores) on a timm encoder."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from isim.models.decoders import DeepLabV3Decoder
from isim.models.encoder import build_encoder
from isim.models.heads import SegmentationHead
from isim.models.spec import ModelSpec

SEGMENTERS = ("deeplabv3", "deeplabv2")


class DeepLabV2Head(nn.Module):
    """ASPP of DeepLabv2: dilated 3x3 convs at rates 6/12/18/24 to class scores, summed."""

    def __init__(self, in_channels: int, n_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, n_classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b(x) for b in self.branches]).sum(0)


class Segmenter(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: SegmentationHead | None = None):
        super().__init__()
        self.encoder, self.decoder, self.head = encoder, decoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores B x C x H x W at the input size."""
        y = self.decoder(self.encoder(x))
        if self.head is not None:
            return self.head(y, x.shape[-2:])
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(self, lr_encoder: float, lr_decoder: float) -> list[dict]:
        new = list(self.decoder.parameters()) + (list(self.head.parameters()) if self.head is not None else [])
        return [{"name": "encoder", "params": list(self.encoder.parameters()), "lr": lr_encoder},
                {"name": "decoder", "params": new, "lr": lr_decoder}]


def segmenter_spec(arch: str, n_classes: int, backbone: str, backbone_kwargs: dict[str, Any], output_stride: int,
                   decoder_channels: int) -> ModelSpec:
    return ModelSpec(arch, backbone, output_stride, dict(backbone_kwargs), n_classes,
                     0 if arch == "deeplabv2" else decoder_channels)


def build_segmenter(spec: ModelSpec, pretrained: bool = False, weights: str = "") -> Segmenter:
    encoder = build_encoder(spec.backbone, spec.backbone_kwargs, spec.output_stride, pretrained, weights)
    info: Any = encoder.feature_info
    chans, reds = info.channels(), info.reduction()
    if spec.arch == "deeplabv2":
        return Segmenter(encoder, _Last(DeepLabV2Head(chans[-1], spec.n_classes)))
    d = spec.decoder_channels
    return Segmenter(encoder, DeepLabV3Decoder(chans, reds, d), SegmentationHead(d, spec.n_classes))


class _Last(nn.Module):
    """Applies ``head`` to the last feature level only."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.head(feats[-1])
