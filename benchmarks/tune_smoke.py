"""A short `isim tune --workers N` study on a small embedded dataset: every worker a process,
all on the same device (one GPU shared, or the CPU), the budget shared. Prints how many trials
completed and the study's wall time.

    .venv/bin/python benchmarks/tune_smoke.py [--device cuda] [--workers 2] [--trials 4]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--trials", type=int, default=4)
    a = p.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    from isim.config import merged
    work = Path(tempfile.mkdtemp())
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), {
        "data": {"synthetic": {"n_train": 48, "n_val": 16}}, "train": {"epochs": 4}, "rounds": {"warmup_epochs": 2},
        "crf_freq": 2, "runtime": {"device": a.device}, "tracking": {"enabled": False},
        "tune": {"n_trials": a.trials, "pruner": "none"}})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    isim = str(Path(sys.executable).parent / "isim")
    env = dict(os.environ, OPTUNA_DISABLE_PROGRESS="1")
    subprocess.run([isim, "prepare", "--out", "data/prepared"], cwd=work, env=env, check=True)
    t0 = time.perf_counter()
    subprocess.run([isim, "tune", "--data", "data/prepared", "--out", "tune/results", "--workers", str(a.workers)],
                   cwd=work, env=env, check=True)
    seconds = time.perf_counter() - t0
    result = yaml.safe_load((work / "tune/results/best.yaml").read_text())
    done = result["counts"]["complete"]
    print(f"{a.workers} workers on {a.device}: {done} of {a.trials} trials complete in {seconds:.0f} s "
          f"(best holdout mIoU {result['best']['value']:.2f})")
    if done != a.trials:
        sys.exit(f"only {done} of {a.trials} trials completed: {result['counts']}")


if __name__ == "__main__":
    main()
