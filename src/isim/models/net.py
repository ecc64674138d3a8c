"""CAM baseline, DeepLabCAM and UNetCAM: a timm encoder at output stride 16, a classification
branch (GAP + 1x1 conv without bias) after its last block, and an optional decoder.

The classification logits are the spatial mean of the CAM map: GAP and a bias-free 1x1 conv
commute, so the CAM used for pseudo labels comes from exactly the weights that classify.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from isim.config import ModelCfg

ARCHS = ("cam", "deeplabcam", "unetcam")
CHECKPOINT_FORMAT = "isim-checkpoint-1"


class ModelError(ValueError):
    """A model cannot be built or a checkpoint does not fit it."""


def build_encoder(cfg: ModelCfg) -> nn.Module:
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in cfg.backbone_kwargs.items()}
    if cfg.pretrained and cfg.weights:
        raise ModelError("model.pretrained and model.weights are exclusive: pick one source of weights")
    try:
        with _hub_offline_unless_reachable(cfg.pretrained):
            enc = timm.create_model(cfg.backbone, pretrained=cfg.pretrained, features_only=True,
                                    out_indices=(1, 2, 3, 4), output_stride=cfg.output_stride, **kwargs)
    except RuntimeError as e:
        if cfg.pretrained:
            raise ModelError(
                f"model.backbone={cfg.backbone}: pretrained weights could not be loaded ({e}). "
                "Without network access, download them elsewhere and set model.weights to the file, "
                "or set model.pretrained: false") from None
        raise
    except (OSError, ValueError) as e:  # hub unreachable, unknown name, ...
        if cfg.pretrained:
            raise ModelError(
                f"model.backbone={cfg.backbone}: pretrained weights are unreachable ({type(e).__name__}: "
                f"{e}). Set model.weights to a local file or model.pretrained: false") from None
        raise ModelError(f"model.backbone={cfg.backbone}: {e}") from None
    if cfg.weights:
        _load_encoder_weights(enc, Path(cfg.weights))
    return enc


@contextmanager
def _hub_offline_unless_reachable(pretrained: bool):
    """Without network, use only the local weight cache: fail in a second, not after minutes of
    download retries."""
    import huggingface_hub.constants as hub
    saved = hub.HF_HUB_OFFLINE
    if pretrained and not saved:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError:
            hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved


def _load_encoder_weights(enc: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"model.weights: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    # features_only encoders drop the classifier head; ignore those keys, refuse anything else
    try:
        missing, unexpected = enc.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ModelError(f"{path}: weights do not fit the encoder ({str(e)[:300]})") from None
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "head", "classifier"))]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not fit the encoder "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


class ISIMNet(nn.Module):
    """Encoder + classification branch (+ decoder for DeepLabCAM / UNetCAM)."""

    def __init__(self, cfg: ModelCfg, arch: str, n_classes: int):
        super().__init__()
        if arch not in ARCHS:
            raise ModelError(f"model.arch: {arch!r} is not one of {list(ARCHS)}")
        self.arch, self.n_classes = arch, n_classes
        self.encoder = build_encoder(cfg)
        chans = self.encoder.feature_info.channels()
        # classification branch on the last block: 1x1 conv without bias, fg classes only
        self.classifier = nn.Conv2d(chans[-1], n_classes - 1, 1, bias=False)
        d = cfg.decoder_channels
        if arch == "deeplabcam":
            self.decoder = nn.Sequential(
                ASPP(chans[-1], [6, 12, 18], d),
                nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True),
                nn.Conv2d(d, n_classes, 1))
        elif arch == "unetcam":
            self.decoder = UNetDecoder(chans, self.encoder.feature_info.reduction(), d, n_classes,
                                       learnable=cfg.unet_upsample == "learnable")
        else:
            self.decoder = None

    def forward(self, x: torch.Tensor, with_seg: bool = True) -> dict[str, torch.Tensor]:
        feats = self.encoder(x)
        cam = self.classifier(feats[-1])
        out = {"cam": cam, "logits": cam.mean(dim=(2, 3))}
        if with_seg and self.decoder is not None:
            seg = self.decoder(feats[-1]) if self.arch == "deeplabcam" else self.decoder(feats)
            out["seg"] = F.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def param_groups(self, lr_encoder: float, lr_decoder: float, lr_classifier: float) -> list[dict]:
        groups = [{"name": "encoder", "params": list(self.encoder.parameters()), "lr": lr_encoder},
                  {"name": "classifier", "params": list(self.classifier.parameters()), "lr": lr_classifier}]
        if self.decoder is not None:
            groups.append({"name": "decoder", "params": list(self.decoder.parameters()), "lr": lr_decoder})
        return groups


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """UNet decoder over the encoder's 4 feature levels, skip connections kept.
    ``learnable`` upsamples with transposed convs, otherwise bilinearly (no upsampling weights).
    Levels at the same resolution (the dilated last stage) are joined with a 1x1 conv."""

    def __init__(self, chans: list[int], reductions: list[int], d: int, n_classes: int, learnable: bool):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        prev, prev_red = chans[-1], reductions[-1]
        for skip, red in zip(reversed(chans[:-1]), reversed(reductions[:-1])):
            doubling = learnable and prev_red == 2 * red
            self.ups.append(nn.ConvTranspose2d(prev, d, 2, stride=2) if doubling else nn.Conv2d(prev, d, 1))
            self.blocks.append(nn.Sequential(_conv_bn(d + skip, d), _conv_bn(d, d)))
            prev, prev_red = d, red
        self.head = nn.Conv2d(d, n_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1])):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # bilinear variant, or odd input sizes
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def build_model(cfg: ModelCfg, arch: str, n_classes: int) -> ISIMNet:
    return ISIMNet(cfg, arch, n_classes)


def identity(cfg: ModelCfg, arch: str, n_classes: int) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into a model."""
    return {"arch": arch, "backbone": cfg.backbone, "backbone_kwargs": dict(cfg.backbone_kwargs),
            "output_stride": cfg.output_stride, "n_classes": n_classes,
            "decoder_channels": cfg.decoder_channels if arch != "cam" else None,
            "unet_upsample": cfg.unet_upsample if arch == "unetcam" else None}


def check_identity(path: str | Path, found: dict[str, Any], expected: dict[str, Any]) -> None:
    diffs = [f"{k}: checkpoint has {found.get(k)!r}, expected {v!r}"
             for k, v in expected.items() if found.get(k) != v]
    if diffs:
        raise ModelError(f"{path}: checkpoint is from another model; " + "; ".join(diffs))
