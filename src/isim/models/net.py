"""ISIMNet: encoder | decoder | heads. The baseline is the encoder with the CAM head only;
DeepLabCAM and UNetCAM add a decoder and a segmentation head (paper 3.2)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from isim.models.heads import CAMHead, SegmentationHead


class Output(NamedTuple):
    logits: torch.Tensor          # B x C_fg, multi-label classification
    cam: torch.Tensor             # B x C_fg x h x w at the encoder's output stride
    seg: torch.Tensor | None      # B x C x H x W segmentation scores; None for the baseline


class ISIMNet(nn.Module):
    def __init__(self, encoder: nn.Module, cam_head: CAMHead, decoder: nn.Module | None = None,
                 seg_head: SegmentationHead | None = None):
        super().__init__()
        self.encoder, self.cam_head, self.decoder, self.seg_head = encoder, cam_head, decoder, seg_head

    def classify(self, x: torch.Tensor) -> Output:
        """Classification branch only: what CAM inference and warm-up epochs need."""
        logits, cam = self.cam_head(self.encoder(x)[-1])
        return Output(logits, cam, None)

    def forward(self, x: torch.Tensor) -> Output:
        feats = self.encoder(x)
        logits, cam = self.cam_head(feats[-1])
        seg = None
        if self.decoder is not None and self.seg_head is not None:
            seg = self.seg_head(self.decoder(feats), x.shape[-2:])
        return Output(logits, cam, seg)

    def param_groups(self, lr_encoder: float, lr_decoder: float, lr_classifier: float) -> list[dict]:
        """Per-part learning rates (paper 4.1: encoder 0.1, decoder 0.01, classifier 1.0)."""
        groups = [{"name": "encoder", "params": list(self.encoder.parameters()), "lr": lr_encoder},
                  {"name": "classifier", "params": list(self.cam_head.parameters()), "lr": lr_classifier}]
        if self.decoder is not None and self.seg_head is not None:
            groups.append({"name": "decoder", "lr": lr_decoder,
                           "params": list(self.decoder.parameters()) + list(self.seg_head.parameters())})
        return groups


class CamOutput(nn.Module):
    """``model`` with its CAM (B x C x h x w, foreground classes) as its one output: what logged
    programs carry. MLflow serves PyTorch models with a single output tensor only, and the
    class logits are the CAM's spatial mean (CAMHead), so nothing of the classifier is lost."""

    def __init__(self, model: ISIMNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).cam
