"""A machine reference for every time this project reports: a fixed convolution forward +
backward (the work of training) and a fixed matrix product, best of several repeats, at the
torch threads the timed run uses. A figure taken on another machine scales by the ratio of the
two references (roughly: the conv time for training and CAM stages, CRF aside).

    .venv/bin/python benchmarks/machine.py            # prints the reference line and its JSON
"""
from __future__ import annotations

import json
import os
import platform
import time

import torch


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: allocation and kernel selection are not the machine
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reference(repeats: int = 5) -> dict:
    """{conv_ms, matmul_ms, threads, cores, cpu, torch}: a few seconds on 2 cores."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 56, 56)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def conv_step() -> None:
        conv.zero_grad(set_to_none=True)
        conv(x).square().mean().backward()

    return {"conv_ms": round(1000 * _best(conv_step, repeats), 1),
            "matmul_ms": round(1000 * _best(lambda: a @ b, repeats), 1),
            "threads": torch.get_num_threads(), "cores": len(os.sched_getaffinity(0)), "cpu": _cpu_name(),
            "torch": torch.__version__}


def describe(ref: dict) -> str:
    return (f"machine reference: conv fwd+bwd {ref['conv_ms']} ms, matmul {ref['matmul_ms']} ms "
            f"({ref['threads']} torch threads on {ref['cores']} cores, {ref['cpu']}; benchmarks/machine.py)")


def print_reference() -> dict:
    """Measure, print the line, return the record (for a benchmark's own JSON)."""
    ref = reference()
    print(describe(ref), flush=True)
    return ref


if __name__ == "__main__":
    ref = reference()
    print(describe(ref))
    print(json.dumps(ref))
