"""Recovery after any interruption: a state file written atomically after every epoch, plus a
copy of every finished round, kept *outside* the stage's DVC outputs (DVC deletes those before
it reruns a stage). The next run of the same stage with the same params, code and data continues
from the last finished epoch and ends exactly as an uninterrupted run would (deterministic CPU);
a recovery state from other params, code or data is discarded with a warning, never reused.

    <dir>/state.pt              model, optimizer, schedule, history, rounds, fingerprint
    <dir>/checkpoints/round_XX.pt, <dir>/pseudo/round_XX/   finished rounds (hard links)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

import isim
from isim import distributed
from isim import run_layout as layout
from isim.io import atomic_path

log = logging.getLogger(__name__)

STATE = "state.pt"
# settings that never change results (where to run, where to record) do not invalidate a recovery
_NEUTRAL = ("runtime", "tracking")


def _hash_files(h: Any, files: list[Path], root: Path) -> None:
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())


def fingerprint(config: dict[str, Any], data_root: Path, ids: list[str], masks: Path | None = None
                ) -> dict[str, str]:
    """What a recovery state is valid for: the params (all but runtime/tracking), this package's
    source code, and the training data (labels file, split, every image's size in bytes, and
    every file of the ``masks`` folder a model trains on, byte for byte)."""
    params = {k: v for k, v in config.items() if k not in _NEUTRAL}
    code = hashlib.sha256()
    pkg = Path(isim.__file__).parent
    _hash_files(code, list(pkg.rglob("*.py")), pkg)
    data = hashlib.sha256((data_root / "image_labels.json").read_bytes())
    for id_ in ids:
        p = data_root / "JPEGImages" / f"{id_}.jpg"
        data.update(f"{id_}:{p.stat().st_size if p.exists() else -1}\n".encode())
    if masks is not None:
        _hash_files(data, [f for f in Path(masks).rglob("*") if f.is_file()], Path(masks))
    return {"params": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
            "code": code.hexdigest(), "data": data.hexdigest()}


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` as hard links (files are never rewritten in place: every writer
    renames a new file over the old one), copying where links are impossible."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    if src.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, copy_function=link)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        link(str(src), str(dst))


class Recovery:
    """The recovery folder of one stage, bound to the run's fingerprint."""

    def __init__(self, root: Path, fp: dict[str, str]):
        self.root, self.fp = Path(root), fp

    def load(self) -> dict[str, Any] | None:
        """The last saved state if it belongs to this run; a stale one is removed with a warning.
        Every rank of a distributed run reads it; all must find the same epoch."""
        state = self._read()
        epochs = distributed.gather(state["epoch"] if state is not None else None)
        if len(set(epochs)) > 1:
            raise distributed.DistributedError(f"{self.root / STATE}: the ranks found different recovery states "
                                               f"(epochs {epochs}); is the folder on a filesystem all nodes share?")
        if state is None and distributed.is_main():  # all ranks have read it: nothing stale stays behind
            self.clear()
        return state

    def _read(self) -> dict[str, Any] | None:
        path = self.root / STATE
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable state is as good as none
            log.warning("%s: unreadable recovery state (%s); starting from epoch 1", path, e)
            return None
        differ = [k for k in self.fp if state.get("fingerprint", {}).get(k) != self.fp[k]]
        if differ:
            if distributed.is_main():
                log.warning("%s: recovery state of a run with other %s; not reused, starting from epoch 1",
                            path, " and ".join(differ))
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.root / STATE) as tmp:
            torch.save({**state, "fingerprint": self.fp}, tmp)

    def keep_round(self, r: int, checkpoint: Path, round_dir: Path) -> None:
        _link_tree(checkpoint, self.root / "checkpoints" / checkpoint.name)
        _link_tree(round_dir, self.root / "pseudo" / round_dir.name)

    def restore_rounds(self, n: int, ckpt_dir: Path, pseudo_root: Path) -> None:
        """Put rounds 1..n back where the stage writes them (DVC removed them)."""
        for r in range(1, n + 1):
            _link_tree(layout.round_checkpoint(self.root / "checkpoints", r), layout.round_checkpoint(ckpt_dir, r))
            _link_tree(layout.round_dir(self.root / "pseudo", r), layout.round_dir(pseudo_root, r))

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
