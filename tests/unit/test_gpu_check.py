"""The one-call GPU check (benchmarks/gpu_check.sh): what it would run, listed without a GPU, and
a clear refusal where there is none."""
import subprocess
import sys

import pytest
import torch

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})


def test_the_dry_run_lists_every_step_within_eight_minutes_and_starts_nothing():
    r = _run("--dry-run")
    assert r.returncode == 0, r.stderr
    steps = [line.split() for line in r.stdout.splitlines()[1:]]
    names = [s[0] for s in steps]
    assert names == ["cuda_tests", "train_step", "train_step_amp_off", "train_step_compile", "regeneration",
                     "tune_2_workers", "voc_round"]
    assert sum(int(s[1].rstrip("s")) for s in steps) <= 8 * 60  # the time limits of all steps together
    commands = r.stdout
    assert "tests/unit/test_cuda.py" in commands and "--set train.amp=false" in commands
    assert "--set runtime.compile=true" in commands and "--workers 2" in commands
    for script in ("train_throughput.py", "regeneration.py", "tune_smoke.py", "voc_round.py"):
        assert (REPO / "benchmarks" / script).is_file() and script in commands


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check itself runs")
def test_without_a_gpu_it_says_so_and_fails():
    r = _run()
    assert r.returncode == 2 and "no CUDA GPU visible" in r.stderr, r.stdout + r.stderr
