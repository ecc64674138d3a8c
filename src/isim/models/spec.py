"""The typed contract of an architecture: what a checkpoint keeps so that its model can be rebuilt
from the checkpoint alone, and refused when it is loaded into another network."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from isim.models.encoder import ModelError


@dataclass(frozen=True)
class ModelSpec:
    arch: str                     # baseline | deeplabcam | unetcam | affinitynet | deeplabv3 | deeplabv2
    backbone: str
    output_stride: int
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 0            # with background; 0 for AffinityNet, which is class-agnostic
    decoder_channels: int = 0     # 0: no decoder (the CAM baseline, AffinityNet, DeepLabv2's head)
    unet_upsample: str = ""       # UNetCAM only: learnable | bilinear
    feature_channels: int = 0     # AffinityNet only

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: a checkpoint holding it loads with ``torch.load(weights_only=True)``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str | Path) -> ModelSpec:
        """The spec a checkpoint (``where``) keeps; None values of older checkpoints mean unset."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or not {"arch", "backbone", "output_stride"} <= set(d) or set(d) - names:
            raise ModelError(f"{where}: its model spec is not one this release reads ({d!r})")
        return cls(**{k: v for k, v in d.items() if v is not None})

    def differences(self, other: ModelSpec, keys: tuple[str, ...] = ()) -> list[str]:
        """The fields (or those of ``keys``) in which the two specs differ."""
        return [k for k in keys or [f.name for f in fields(self)] if getattr(self, k) != getattr(other, k)]


ENCODER_KEYS = ("backbone", "backbone_kwargs", "output_stride")  # what makes two encoders the same network

__all__ = ["ModelSpec", "ENCODER_KEYS"]
