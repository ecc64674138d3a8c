"""Full embedded pipeline: `dvc repro` from scratch in a fresh clone of this repository, then a
no-op `dvc repro`, against the 10-minute target; prints where the time went, stage by stage
(from the moment DVC starts each stage to the next), and the paper's Table 2 shape from the run.

    .venv/bin/python benchmarks/pipeline.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 600.0
sys.path.insert(0, str(ROOT / "benchmarks"))
from table2 import print_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--keep", help="clone into this directory (kept) instead of a temp dir")
    a = p.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp()) / "isim"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    begin = time.perf_counter()
    starts: list[tuple[str, float]] = []
    with subprocess.Popen(["dvc", "repro"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Running stage '"):
                starts.append((line.split("'")[1], time.perf_counter()))
    if proc.returncode:
        sys.exit(f"dvc repro failed ({proc.returncode}) in {work}")
    full = time.perf_counter() - begin
    t0 = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    noop = time.perf_counter() - t0
    print(f"dvc repro from scratch: {full:.0f} s  ({full / TARGET_S:.2f}x the {TARGET_S:.0f} s target)")
    print(f"dvc repro, nothing to do: {noop:.1f} s  (target 10 s)")
    ends = [t for _, t in starts[1:]] + [begin + full]
    stages = sorted(((e - t, name) for (name, t), e in zip(starts, ends)), reverse=True)
    print("| stage | s | share |\n| --- | ---: | ---: |")
    for seconds, name in stages:
        print(f"| {name} | {seconds:.0f} | {100 * seconds / full:.0f} % |")
    print_table(work / "reports" / "evaluation.json")


if __name__ == "__main__":
    main()
