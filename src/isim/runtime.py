"""Where code runs: device, CPU threads, seeds and determinism (the ``runtime`` section)."""
from __future__ import annotations

import ctypes
import os
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


def cpus() -> int:
    """The CPUs this process may run on: a scheduler's cpuset (Slurm, Kubernetes, taskset), not
    the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.
    A CPU forward pass allocates and frees feature maps of megabytes; handed back every time,
    each reuse costs page faults that outweigh the convolutions (CAMs of a 500x375 photo: 2.4 s
    of 4.3 s was the kernel zeroing pages; 1.9 s in all with this). Memory then stays at its
    high-water mark between images rather than shrinking. Other C libraries: nothing done."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    for param in (-1, -3):  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD (malloc.h)
        libc.mallopt(param, 1 << 30)


def setup(cfg: RuntimeCfg) -> torch.device:
    """Apply the runtime section (threads) and return the device to run on; under torchrun,
    join the process group first (this rank's GPU)."""
    keep_freed_memory()
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
