"""Training checkpoints: model + spec, optimizer, scheduler, epoch, round and history, written
atomically; loaded with ``weights_only`` and only into a model of the same spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from isim.io import atomic_path
from isim.models import CHECKPOINT_FORMAT, ModelSpec, check_spec, checkpoint_spec, read_checkpoint


def save_checkpoint(path: Path, spec: ModelSpec, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    sched: Any, epoch: int, round_: int, history: list[dict], config: dict[str, Any],
                    classes: list[str] | None = None, trained_on: dict[str, Any] | None = None) -> None:
    """``config`` and ``classes`` travel with the weights: `isim predict` needs nothing else;
    ``trained_on`` says which masks a segmenter learnt from (and their holdout score)."""
    state = {"format": CHECKPOINT_FORMAT, "spec": spec.to_dict(), "model": model.state_dict(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
             "round": round_, "history": history, "config": config, "classes": classes or [],
             "trained_on": trained_on or {}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, model: torch.nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """Load weights into ``model``; refuse a checkpoint of another model or backbone."""
    state = read_checkpoint(path)
    check_spec(path, checkpoint_spec(state, path), spec)
    model.load_state_dict(state["model"])
    return state

