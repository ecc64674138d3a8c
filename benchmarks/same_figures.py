"""Does a refactor change results? The tiny embedded pipeline (`dvc repro`, one thread) run with
the code of two git revisions; every metric file and every mask set's summary.json compared,
timings left out. Prints the differences and exits 1 when there are any.

    .venv/bin/python benchmarks/same_figures.py --before f5b68ec [--after HEAD]

Each revision is checked out into a temporary worktree and runs its own dvc.yaml and sources
on the same tiny params (tests/conftest.py's), so only the code differs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def figures(rev: str, work: Path) -> dict:
    tree = work / f"tree-{rev}"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), rev], cwd=REPO, check=True)
    try:
        sys.path.insert(0, str(tree / "tests"))
        from conftest import dvc_project, tiny_params  # the revision's own copy of the project
        repo = dvc_project(work / f"run-{rev}", tiny_params(train={"epochs": 3}, segmenter={"epochs": 2},
                                                          affinity={"epochs": 2}))
        sys.path.pop(0)
        for name in [m for m in sys.modules if m == "conftest"]:
            del sys.modules[name]
        env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS="1",
                   PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=repo, env=env, check=True)
        files = sorted((repo / "metrics").rglob("*.json")) + sorted((repo / "pseudo").rglob("summary.json"))
        return {str(p.relative_to(repo)): _untimed(json.loads(p.read_text())) for p in files}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if "second" not in k and "per_s" not in k}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _flat(x, prefix: str = "") -> dict[str, object]:
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _flat(val, f"{prefix}.{key}" if prefix else key).items()}
    return {prefix: x}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the baseline")
    ap.add_argument("--after", default="HEAD", help="git revision to compare (default HEAD)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before, after = (_flat(figures(rev, Path(tmp))) for rev in (a.before, a.after))
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for k in differ:
        print(f"{k}: {before.get(k)!r} -> {after.get(k)!r}")
    print(f"{len(before)} figures of {a.before}, {len(after)} of {a.after}: "
          f"{'identical' if not differ else f'{len(differ)} differ'}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
