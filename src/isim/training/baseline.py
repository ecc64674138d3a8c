"""The CAM baseline: the encoder and classification branch trained on image labels only."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isim import distributed
from isim.config import Config
from isim.data.layout import Prepared
from isim.models import model_spec
from isim.runtime import seed_everything, setup
from isim.training.loop import Trainer


def train_baseline(cfg: Config, data: Prepared, checkpoint: Path,
                   on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train for ``train.epochs`` and save ``checkpoint``. Returns {history, seconds, model}."""
    seed_everything(cfg.seed)
    trainer = Trainer(cfg, data, model_spec(cfg.encoder, None, data.n_classes), setup(cfg.runtime))
    t0 = time.perf_counter()
    for epoch in range(1, cfg.train.epochs + 1):
        rec = trainer.run_epoch(epoch)
        if on_epoch:
            on_epoch(rec)
    if distributed.is_main():
        trainer.save(checkpoint, cfg.train.epochs, 0)
    return {"history": trainer.history, "seconds": time.perf_counter() - t0, "model": trainer.model}
