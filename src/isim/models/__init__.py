"""Models by name: ``build_model(spec)`` assembles encoder | decoder | heads, ``load_model``
rebuilds one from a checkpoint alone (no params, no hub weights).

A :class:`ModelSpec` fully describes an architecture; checkpoints store it (as plain types), and
a checkpoint is only loaded into a model of the same spec.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from isim.config import EncoderCfg, ModelCfg
from isim.models.affinitynet import AffinityNet, build_affinity
from isim.models.decoders import DeepLabV3Decoder, UNetDecoder
from isim.models.encoder import ModelError, build_encoder
from isim.models.heads import CAMHead, SegmentationHead
from isim.models.net import ISIMNet, Output
from isim.models.segmenter import SEGMENTERS, Segmenter, build_segmenter
from isim.models.spec import ModelSpec

ARCHS = ("baseline", "deeplabcam", "unetcam")
CHECKPOINT_FORMAT = "isim-checkpoint-2"


def model_spec(encoder: EncoderCfg, model: ModelCfg | None, n_classes: int) -> ModelSpec:
    """The spec of the baseline (``model=None``) or of ISIM's net (``model.arch``)."""
    if model is None:
        return ModelSpec("baseline", encoder.backbone, encoder.output_stride, dict(encoder.backbone_kwargs), n_classes)
    return ModelSpec(model.arch, encoder.backbone, encoder.output_stride, dict(encoder.backbone_kwargs), n_classes,
                     model.decoder_channels, model.unet_upsample if model.arch == "unetcam" else "")


def build_model(spec: ModelSpec, pretrained: bool = False, weights: str = "") -> ISIMNet:
    """Assemble the net of ``spec``; encoder weights from the hub (``pretrained``), a local
    file (``weights``) or random."""
    if spec.arch not in ARCHS:
        raise ModelError(f"model.arch: {spec.arch!r} is not one of {list(ARCHS)}")
    encoder = build_encoder(spec.backbone, spec.backbone_kwargs, spec.output_stride, pretrained, weights)
    info: Any = encoder.feature_info  # timm's FeatureInfo
    chans, reds = info.channels(), info.reduction()
    cam_head = CAMHead(chans[-1], spec.n_classes - 1)
    if spec.arch == "baseline":
        return ISIMNet(encoder, cam_head)
    d = spec.decoder_channels
    decoder = (DeepLabV3Decoder(chans, reds, d) if spec.arch == "deeplabcam"
               else UNetDecoder(chans, reds, d, learnable=spec.unet_upsample == "learnable"))
    return ISIMNet(encoder, cam_head, decoder, SegmentationHead(d, spec.n_classes))


def check_spec(path: str | Path, found: ModelSpec, expected: ModelSpec) -> None:
    diffs = [f"{k}: checkpoint has {getattr(found, k)!r}, expected {getattr(expected, k)!r}"
             for k in found.differences(expected)]
    if diffs:
        raise ModelError(f"{path}: checkpoint is from another model; " + "; ".join(diffs))


def checkpoint_spec(state: dict[str, Any], path: str | Path) -> ModelSpec:
    """The spec a checkpoint read by :func:`read_checkpoint` keeps."""
    return ModelSpec.from_dict(state.get("spec"), path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (``torch.load`` with ``weights_only``), checked to be ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an isim checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return state


def load_model(path: str | Path, device: torch.device | str = "cpu") -> ISIMNet:
    """The ISIM (or CAM baseline) model saved in ``path``, in eval mode; built from the
    checkpoint's own spec."""
    return _load_as(path, ARCHS, "an ISIM or CAM baseline one", build_model, device)


def _load_as(path: str | Path, archs: tuple[str, ...], what: str, build, device: torch.device | str) -> Any:
    state = read_checkpoint(path)
    spec = checkpoint_spec(state, path)
    if spec.arch not in archs:
        raise ModelError(f"{path}: a {spec.arch!r} checkpoint, not {what}")
    model = build(spec)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_affinity(path: str | Path, device: torch.device | str = "cpu") -> AffinityNet:
    """The AffinityNet saved in ``path``, in eval mode."""
    return _load_as(path, ("affinitynet",), "an AffinityNet one (checkpoints/affinity.pt)", build_affinity, device)


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> Segmenter:
    """The final segmentation model saved in ``path``, in eval mode."""
    return _load_as(path, SEGMENTERS, "a final segmenter (checkpoints/segmenter.pt)", build_segmenter, device)


__all__ = ["ARCHS", "CHECKPOINT_FORMAT", "AffinityNet", "ISIMNet", "ModelError", "Output", "build_model",
           "ModelSpec", "Segmenter", "check_spec", "checkpoint_spec", "load_affinity", "load_model", "load_segmenter",
           "model_spec", "read_checkpoint"]
