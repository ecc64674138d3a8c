"""Where code runs: device, CPU threads, seeds and determinism (the ``runtime`` section)."""
from __future__ import annotations

import random

import numpy as np
import torch

from isim import distributed
from isim.config import RuntimeCfg
from isim.errors import IsimError


class DeviceError(IsimError, RuntimeError):
    """The requested device is not available."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"runtime.device={name}, but CUDA is not available on this machine")
    return torch.device(name)


def setup(cfg: RuntimeCfg) -> torch.device:
    """Apply the runtime section (threads) and return the device to run on; under torchrun,
    join the process group first (this rank's GPU)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if distributed.launched():
        device = distributed.init(cfg.device, cfg.backend, cfg.dist_timeout_s)
    else:
        device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    return device


def amp_dtype(enabled: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training: bf16 where the GPU supports it (no loss scaling needed),
    else fp16 (with a GradScaler); None on the CPU or when ``train.amp`` is off."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
