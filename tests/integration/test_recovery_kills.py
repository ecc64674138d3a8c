"""Recovery after an interruption: a killed train_isim (and every other trained model, through
the one engine) continues from its last finished epoch and ends exactly as an uninterrupted
run; a recovery state of other params or other training masks is never reused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from conftest import bin_path, dvc_project, run, tiny_params


def _wait_then_kill(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stdout.read()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc, its shell and isim: as a crash or `kill -9` would
    proc.wait()


class _Repro:
    """`dvc repro` in ``repo`` with one thread: run to the end, or started to be killed (its own
    process group, so `kill -9` takes dvc, its shell and isim, as a crash would)."""

    ENV = {"OMP_NUM_THREADS": "1"}

    def __init__(self, repo: Path):
        self.repo, self.dvc = repo, bin_path("dvc")

    def __call__(self, *args: str) -> str:
        r = run([self.dvc, "repro", *args], self.repo, self.ENV)
        return r.stdout + r.stderr

    def start(self, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PATH=f"{Path(self.dvc).parent}{os.pathsep}{os.environ['PATH']}", **self.ENV)
        return subprocess.Popen([self.dvc, "repro", *args], cwd=self.repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _epoch_saved(state: Path, epoch: int):
    return lambda: state.is_file() and torch.load(state, weights_only=True)["epoch"] >= epoch


def test_dvc_repro_after_sigkill_mid_epoch_and_mid_regeneration_matches_an_uninterrupted_run(tmp_path):
    repo = dvc_project(tmp_path / "repo", tiny_params(train={"epochs": 4}, data={"synthetic": {"n_train": 24}}))
    repro = _Repro(repo)
    state = repo / ".isim" / "recovery" / "train_isim" / "state.pt"
    # 1: killed during epoch 3, right after epoch 2's recovery state is written
    _wait_then_kill(repro.start("train_isim"), _epoch_saved(state, 2), "epoch 2")
    # 2: killed halfway through writing round 3 (made after epoch 3)
    partial = repo / "pseudo" / "isim" / ".round_03.partial" / "crf"
    _wait_then_kill(repro.start("train_isim"), lambda: partial.is_dir() and len(list(partial.iterdir())) >= 5,
                    "round 3")
    assert not (repo / "pseudo" / "isim" / "round_03").exists()  # a half-written round never looks complete
    assert "continuing at epoch 4" in repro("train_isim")
    resumed = json.loads((repo / "metrics" / "train_isim.json").read_text())
    assert sorted(p.name for p in (repo / "pseudo" / "isim").iterdir()) == [f"round_{r:02d}" for r in (1, 2, 3, 4)]
    assert not state.parent.exists()  # cleared once the stage is done
    run([repro.dvc, "status", "train_isim"], repo)
    # the same stage uninterrupted, for comparison
    assert "continuing" not in repro("-f", "-s", "train_isim")
    reference = json.loads((repo / "metrics" / "train_isim.json").read_text())
    for k in reference:
        if k != "seconds":
            assert resumed[k] == reference[k], k


def test_a_killed_train_segmenter_continues_through_dvc_repro(tmp_path):
    repo = dvc_project(tmp_path / "repo", tiny_params(segmenter={"epochs": 4}, data={"synthetic": {"n_train": 24}}))
    repro = _Repro(repo)
    repro("random_walk")
    state = repo / ".isim" / "recovery" / "train_segmenter" / "state.pt"
    _wait_then_kill(repro.start("train_segmenter"), _epoch_saved(state, 2), "epoch 2")
    assert "continuing at epoch" in repro("train_segmenter")
    resumed = json.loads((repo / "metrics" / "train_segmenter.json").read_text())
    assert not state.parent.exists()  # cleared once the stage is done
    assert "continuing" not in repro("-f", "-s", "train_segmenter")
    reference = json.loads((repo / "metrics" / "train_segmenter.json").read_text())
    assert resumed["epochs"] == 4
    assert {k: v for k, v in resumed.items() if k != "seconds"} == \
        {k: v for k, v in reference.items() if k != "seconds"}
