"""Full embedded pipeline: `dvc repro` from scratch in a fresh clone of this repository, then a
no-op `dvc repro`, against the 10-minute target; prints where the time went, stage by stage
(from the moment DVC starts each stage to the next), and the paper's Table 2 shape from the run.
``--baseline PRESET`` then runs the same in a second fresh clone with the preset applied (e.g.
pipelines/embedded-long.yaml, the earlier default budget), or ``--baseline-rev REV`` in a clone
checked out at an earlier commit (its own sources run), and prints both side by side.

    .venv/bin/python benchmarks/pipeline.py [--keep DIR] [--baseline pipelines/embedded-long.yaml | --baseline-rev REV]
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

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def repro(work: Path, preset: str | None = None, rev: str | None = None) -> tuple[float, dict[str, float]]:
    """Clone (at ``rev``), apply ``preset``, `dvc repro` from scratch: (seconds, {stage: seconds}).
    The clone's own sources run (PYTHONPATH), whatever the environment's editable install points to."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    if rev:
        subprocess.run(["git", "checkout", "-q", rev], cwd=work, check=True)
    env = {**ENV, "PYTHONPATH": str(work / "src")}
    if preset:
        subprocess.run(["isim", "params", preset], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
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
    ends = [t for _, t in starts[1:]] + [begin + full]
    return full, {name: e - t for (name, t), e in zip(starts, ends)}


def stage_table(full: float, stages: dict[str, float], base: tuple[float, dict[str, float]] | None) -> str:
    """Markdown table of the stages, longest first, with the baseline's column when there is one."""
    head = ["stage"] + (["baseline, s"] if base else []) + ["now, s", "share now"]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for name in sorted(stages, key=stages.get, reverse=True):
        rows.append([name] + ([f"{base[1].get(name, 0):.0f}"] if base else [])
                    + [f"{stages[name]:.0f}", f"{100 * stages[name] / full:.0f} %"])
    if base:
        rows.append(["**whole `dvc repro`**", f"**{base[0]:.0f}**", f"**{full:.0f}**", f"{base[0] / full:.2f}x faster"])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--keep", help="clone into this directory (kept) instead of a temp dir")
    p.add_argument("--baseline", metavar="PRESET", help="also time a clone with this preset applied, after")
    p.add_argument("--baseline-rev", metavar="REV", help="also time a clone checked out at REV, after")
    a = p.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp()) / "isim"
    full, stages = repro(work)
    t0 = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=work, env={**ENV, "PYTHONPATH": str(work / "src")}, check=True,
                   stdout=subprocess.DEVNULL)
    noop = time.perf_counter() - t0
    print(f"dvc repro from scratch: {full:.0f} s", flush=True)
    base: tuple[float, dict[str, float]] | None = None
    if a.baseline or a.baseline_rev:
        base_work = work.with_name(work.name + "-baseline")
        base = repro(base_work, a.baseline, a.baseline_rev)
        print(f"baseline ({a.baseline or a.baseline_rev}): dvc repro from scratch {base[0]:.0f} s")
        print_table(base_work / "reports" / "evaluation.json")
    print(f"dvc repro from scratch: {full:.0f} s  ({full / TARGET_S:.2f}x the {TARGET_S:.0f} s target)"
          + (f"; baseline {base[0]:.0f} s, {base[0] / full:.2f}x faster" if base else ""))
    print(f"dvc repro, nothing to do: {noop:.1f} s  (target 10 s)")
    print(stage_table(full, stages, base))
    print_table(work / "reports" / "evaluation.json")


if __name__ == "__main__":
    main()
