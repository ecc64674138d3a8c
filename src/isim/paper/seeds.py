"""The CAM-vs-ISIM comparison over several seeds, each in its own folder.

One run = dvc.yaml's own stages (prepare, train_baseline, pseudo_baseline, train_isim, and
with the random walk its three stages), run in the run's folder on a params file derived from
the project's: ``seed`` (and, on the embedded data, ``data.synthetic.seed``) set to the run's
seed, tracking off, plus the caller's overrides. Each run writes ``result.json`` last
(atomically), so an interrupted sweep reruns only the runs that had not finished; a folder
made with other params or other method code is refused. Method code never imports this module.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from isim import run_layout as layout
from isim.config import ConfigError, from_dict, overridden
from isim.errors import IsimError
from isim.io import write_json, write_text
from isim.mask_scores import MaskSetSummary
from isim.project import Project

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@dataclass
class Run:
    """One seed of one variant: its folder and the params it runs with."""

    root: Path
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)
    random_walk: bool = False  # also AffinityNet and the random walk (Table 7's rows)

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()  # the commands run inside it

    @property
    def result_path(self) -> Path:
        return self.root / "result.json"

    def params(self, base: dict[str, Any]) -> dict[str, Any]:
        fixed: dict[str, Any] = {"seed": self.seed, "tracking.enabled": False}
        if base.get("data", {}).get("source", "synthetic") == "synthetic":
            fixed["data.synthetic.seed"] = self.seed  # a new dataset per seed, too
        raw = overridden(base, {**fixed, **self.overrides})
        try:
            from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{self.root}: {e}") from None
        return raw


# the stages of dvc.yaml a run executes, in order: their commands, outputs and code come from there
STAGES = ("prepare", "train_baseline", "pseudo_baseline", "train_isim")
RW_STAGES = ("affinity_labels", "train_affinity", "random_walk")  # Table 7's rows
PROJECT = Project(Path(__file__).resolve().parents[3])  # the checkout's own dvc.yaml


def _steps(params: Path, random_walk: bool) -> list[tuple[str, list[str]]]:
    """(stage, command) for the run: dvc.yaml's commands, run inside the run's folder (their paths
    are relative) with its params file."""
    steps = []
    for name in STAGES + (RW_STAGES if random_walk else ()):
        cmd = PROJECT.command(name)
        assert cmd[0] == "isim", f"dvc.yaml stage {name}: expected an isim command"
        steps.append((name, [sys.executable, "-m", "isim.cli", "--params", str(params), *cmd[1:]]))
    return steps


def _masks(summary: MaskSetSummary) -> dict[str, float]:
    return {f"{k}_{m}": getattr(score, m) for k, score in (("raw", summary.raw), ("crf", summary.crf))
            if score is not None for m in ("miou", "precision", "recall")}


def _in(run: Path, stage: str, flag: str) -> Path:
    """A stage's output inside a run's folder (its commands' paths are relative)."""
    return run / PROJECT.arg(stage, flag).relative_to(PROJECT.root)


def collect(r: Path) -> dict[str, Any]:
    """The run's figures: the baseline's masks and every ISIM round's (mIoU, object precision and
    recall, before and after CRF)."""
    base = layout.read_summary(_in(r, "pseudo_baseline", "--out"))
    if base.raw is None:
        raise IsimError(f"{r}: the dataset has no masks to score pseudo labels against")
    isim = _in(r, "train_isim", "--pseudo")
    rounds = [{"round": layout.round_number(p), **_masks(layout.read_summary(p))}
              for p in layout.rounds_of(isim, required=False) if layout.summary_path(p).is_file()]
    if not rounds:
        raise IsimError(f"{isim}: no finished round")
    out = {"baseline": _masks(base), "rounds": rounds,
           "baseline_label_acc": base.classification.get("label_acc")}
    walk = layout.summary_path(_in(r, "random_walk", "--out"))
    if walk.is_file():
        out["random_walk"] = _masks(layout.read_summary(walk.parent))
    return out


def method_code() -> str:
    """Hash of the code that makes a run's figures: the source files its dvc.yaml stages declare."""
    stages, root = PROJECT.stages, PROJECT.root
    deps = {d for n in STAGES + RW_STAGES for d in stages[n]["deps"] if d.startswith("src/")}
    files = {f for d in deps for f in ((root / d).rglob("*.py") if (root / d).is_dir() else [root / d])}
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def execute(run: Run, base: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run (or finish) one seed; returns its result."""
    params, text = run.root / "params.yaml", yaml.safe_dump(run.params(base), sort_keys=False)
    if params.is_file() and params.read_text() != text:  # never mix figures of two settings
        raise IsimError(f"{params}: this run was made with other params; delete {run.root} or use another workdir")
    code = run.root / "code.sha256"
    if code.is_file() and code.read_text().strip() != method_code():
        raise IsimError(f"{run.root}: this run was made with other code (src/isim changed since); "
                        f"delete {run.root} or use another workdir")
    if run.result_path.is_file():
        done = read_json(run.result_path)
        if not run.random_walk or "random_walk" in done:
            return done
    run.root.mkdir(parents=True, exist_ok=True)
    write_text(params, text)
    write_text(code, method_code() + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for stage, cmd in _steps(params, run.random_walk):
        done = run.root / ".done" / stage  # written after the stage succeeded: a rerun skips it
        if done.exists():
            continue
        log.info("%s: %s", run.root.name, stage)
        with open(run.root / "log.txt", "a") as out:
            rc = subprocess.call(cmd, cwd=run.root, env=env, stdout=out, stderr=subprocess.STDOUT)
        if rc != 0:
            raise IsimError(f"{run.root}: stage {stage} failed (exit {rc}); its output is in {run.root / 'log.txt'}")
        write_text(done, "")
    result = {"seed": run.seed, "overrides": run.overrides, **collect(run.root)}
    write_json(run.result_path, result)
    return result


def execute_all(runs: list[Run], base: dict[str, Any], jobs: int = 1) -> list[dict[str, Any]]:
    """Every run, ``jobs`` at a time, the machine's cores split between them."""
    from isim.runtime import cpus  # imports torch: only when runs are executed
    threads = max(1, cpus() // max(jobs, 1))
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as ex:
        return list(ex.map(lambda r: execute(r, base, threads), runs))
