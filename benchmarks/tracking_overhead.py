"""Tracking overhead: the `train_isim` stage on the embedded data with MLflow tracking
(to a sqlite store) and without; prints both wall times and the overhead.

    .venv/bin/python benchmarks/tracking_overhead.py [--epochs 10]
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_cmd(name: str) -> list[str]:
    """The stage's command line as dvc.yaml writes it."""
    return shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]["cmd"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    work = Path(tempfile.mkdtemp())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = a.epochs
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(stage_cmd("prepare"), cwd=work, env=env, check=True, capture_output=True)
    times = {}
    for enabled in (False, True):
        params["tracking"] = {**params["tracking"], "enabled": enabled, "uri": f"sqlite:///{work / 'mlflow.db'}"}
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        t0 = time.perf_counter()
        subprocess.run(stage_cmd("train_isim"), cwd=work, env=env, check=True, capture_output=True)
        times[enabled] = time.perf_counter() - t0
    print(f"train_isim without tracking: {times[False]:.1f} s  (baseline)")
    print(f"train_isim with MLflow     : {times[True]:.1f} s  -> overhead "
          f"{100 * (times[True] - times[False]) / times[False]:+.1f} %")


if __name__ == "__main__":
    main()
