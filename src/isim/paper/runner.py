"""The CAM-vs-ISIM comparison over several seeds, each in its own folder.

One run = the pipeline's own commands (``isim prepare``, ``train-baseline``, ``pseudo``,
``train-isim``) on a params file derived from the project's: ``seed`` (and, on the embedded
data, ``data.synthetic.seed``) set to the run's seed, tracking off, plus the caller's
overrides. Each run writes ``result.json`` last (atomically), so an interrupted sweep reruns
only the runs that had not finished; a folder made with other params or other method code is
refused. Method code never imports this module.
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

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings (values parsed as YAML, as ``dvc exp run -S`` does)."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {p!r}: expected dotted.key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


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


def _steps(r: Path, params: Path, random_walk: bool) -> list[tuple[Path, list[str]]]:
    """(output that marks the step done, command): the commands of dvc.yaml's stages."""
    isim = [sys.executable, "-m", "isim.cli", "--params", str(params)]
    d = str(r / "data")
    rw = [
        (layout.summary_path(r / "affinity"), [*isim, "affinity-labels", "--data", d, "--isim-checkpoints",
                                               str(r / "isim"), "--out", str(r / "affinity")]),
        (r / "affinity.pt", [*isim, "train-affinity", "--data", d, "--labels", str(r / "affinity"), "--checkpoint",
                             str(r / "affinity.pt"), "--metrics", str(r / "train_affinity.json"),
                             "--plots", str(r / "train_affinity.csv")]),
        (layout.summary_path(r / "rw"), [*isim, "random-walk", "--data", d, "--isim-checkpoints", str(r / "isim"),
                                         "--affinity-checkpoint", str(r / "affinity.pt"), "--out", str(r / "rw")]),
    ]
    return [
        (r / "data" / "image_labels.json", [*isim, "prepare", "--out", d]),
        (r / "baseline.pt", [*isim, "train-baseline", "--data", d, "--checkpoint", str(r / "baseline.pt"),
                             "--metrics", str(r / "train_baseline.json"), "--plots", str(r / "train_baseline.csv")]),
        (layout.summary_path(r / "pseudo_baseline"),
         [*isim, "pseudo", "--checkpoint", str(r / "baseline.pt"), "--data", d, "--out", str(r / "pseudo_baseline")]),
        (r / "train_isim.json", [*isim, "train-isim", "--data", d, "--checkpoints", str(r / "isim"),
                                 "--pseudo", str(r / "pseudo_isim"), "--metrics", str(r / "train_isim.json"),
                                 "--plots", str(r / "train_isim.csv"), "--recovery", str(r / "recovery")]),
    ] + (rw if random_walk else [])


def _masks(summary: dict) -> dict[str, float]:
    return {f"{k}_{m}": summary[k][m] for k in ("raw", "crf") for m in ("miou", "precision", "recall")}


def collect(r: Path) -> dict[str, Any]:
    """The run's figures: the baseline's masks and every ISIM round's (mIoU, object precision and
    recall, before and after CRF)."""
    base = read_json(layout.summary_path(r / "pseudo_baseline"))
    if "raw" not in base:
        raise IsimError(f"{r}: the dataset has no masks to score pseudo labels against")
    rounds = [{"round": layout.round_number(p), **_masks(read_json(layout.summary_path(p)))}
              for p in layout.rounds_of(r / "pseudo_isim", required=False) if layout.summary_path(p).is_file()]
    if not rounds:
        raise IsimError(f"{r / 'pseudo_isim'}: no finished round")
    out = {"baseline": _masks(base), "rounds": rounds,
           "baseline_label_acc": base.get("classification", {}).get("label_acc")}
    if layout.summary_path(r / "rw").is_file():
        out["random_walk"] = _masks(read_json(layout.summary_path(r / "rw")))
    return out


def method_code() -> str:
    """Hash of the code that makes a run's figures: this package without its MLOps parts and
    the stages a run does not use (evaluation, the final segmenter, tuning)."""
    pkg = Path(__file__).resolve().parents[1]
    skip = ("paper/", "tuning/", "cli.py", "tracking.py", "serving.py", "launch.py", "visualize.py",
            "evaluation.py", "inference.py", "stages/evaluate", "stages/train_segmenter", "stages/tune",
            "stages/check", "training/segmenter.py", "models/segmenter.py")
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg).as_posix()
        if not rel.startswith(skip):
            h.update(rel.encode() + f.read_bytes())
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
    for marker, cmd in _steps(run.root, params, run.random_walk):
        if marker.exists():
            continue
        log.info("%s: %s", run.root.name, cmd[5])
        with open(run.root / "log.txt", "a") as out:
            rc = subprocess.call(cmd, cwd=run.root, env=env, stdout=out, stderr=subprocess.STDOUT)
        if rc != 0:
            raise IsimError(f"{run.root}: `isim {cmd[5]}` failed (exit {rc}); its output is in {run.root / 'log.txt'}")
    result = {"seed": run.seed, "overrides": run.overrides, **collect(run.root)}
    write_json(run.result_path, result)
    return result


def execute_all(runs: list[Run], base: dict[str, Any], jobs: int = 1) -> list[dict[str, Any]]:
    """Every run, ``jobs`` at a time, the machine's cores split between them."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as ex:
        return list(ex.map(lambda r: execute(r, base, threads), runs))
