"""`isim tune-apply`: the study's best params as a DVC experiment (`dvc exp run -S ...`), so the
tuned configuration is reproduced by the full pipeline and compared in `dvc exp show`."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from isim.errors import IsimError


def command(best_file: Path, name: str | None = None, queue: bool = False) -> list[str]:
    try:
        doc = yaml.safe_load(best_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise IsimError(f"{best_file}: cannot read the study's best params ({e})") from None
    best = doc.get("best")
    if not best or not best.get("params"):
        raise IsimError(f"{best_file}: the study has no complete trial yet, so no best params")
    cmd = ["dvc", "exp", "run"]
    for k, v in best["params"].items():
        cmd += ["-S", f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"]
    cmd += ["--name", name or f"{doc.get('study', 'tune')}-trial-{best['trial']}"]
    return cmd + (["--queue"] if queue else [])


def apply(best_file: Path, name: str | None = None, queue: bool = False, dry_run: bool = False) -> int:
    cmd = command(best_file, name, queue)
    print(" ".join(cmd))
    return 0 if dry_run else subprocess.run(cmd).returncode
