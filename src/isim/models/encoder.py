"""Encoders: timm backbones as feature pyramids at output stride 16 (or 8), with weights from
timm's hub, from a pip package or a local file (both offline: models/pretrained.py), or none."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
from torch import nn

from isim.errors import ModelError
from isim.models.pretrained import PACKAGE, load_weights, package_weights


def build_encoder(backbone: str, backbone_kwargs: dict[str, Any], output_stride: int,
                  pretrained: bool = False, weights: str = "") -> nn.Module:
    """The 4 feature levels of ``backbone``; its last stage dilated to reach ``output_stride``."""
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in backbone_kwargs.items()}
    if pretrained and weights:
        raise ModelError("encoder.pretrained and encoder.weights are exclusive: pick one source of weights")
    try:
        with _hub_offline_unless_reachable(pretrained):
            enc = timm.create_model(backbone, pretrained=pretrained, features_only=True,
                                    out_indices=(1, 2, 3, 4), output_stride=output_stride, **kwargs)
    except RuntimeError as e:
        if pretrained:
            raise ModelError(
                f"encoder.backbone={backbone}: pretrained weights could not be loaded ({e}). "
                "Without network access, download them elsewhere and set encoder.weights to the file, "
                "or set encoder.pretrained: false") from None
        raise
    except TypeError as e:  # a keyword this architecture does not take
        raise ModelError(f"encoder.backbone_kwargs {backbone_kwargs} do not fit {backbone} ({e})") from None
    except (OSError, ValueError) as e:  # hub unreachable, unknown name, ...
        if pretrained:
            raise ModelError(
                f"encoder.backbone={backbone}: pretrained weights are unreachable ({type(e).__name__}: "
                f"{e}). Set encoder.weights to a local file or encoder.pretrained: false") from None
        raise ModelError(f"encoder.backbone={backbone}: {e}") from None
    if weights:
        load_weights(enc, package_weights(backbone) if weights == PACKAGE else Path(weights))
    return enc


@contextmanager
def _hub_offline_unless_reachable(pretrained: bool) -> Iterator[None]:
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


def train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` the encoder's BatchNorm layers (timm's BatchNormAct2d
    too) keep their pretrained running statistics, as IRN trains its ImageNet ResNet: small
    batches of a few classes would otherwise overwrite ImageNet's statistics. Their scale and
    shift still learn."""
    model.train()
    if freeze_bn:
        net: Any = getattr(model, "module", model)  # under DDP
        net = getattr(net, "_orig_mod", net)  # under torch.compile
        for m in net.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
