"""The CAM baseline: the encoder and classification branch trained on image labels only."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from isim import distributed
from isim.config import Config
from isim.data.layout import Prepared
from isim.models import model_spec
from isim.runtime import seed_everything, setup
from isim.training.engine import TrainingResult
from isim.training.isim import cam_engine
from isim.training.recovery import Recovery


def train_baseline(cfg: Config, data: Prepared, checkpoint: Path, on_epoch: Callable[[dict], None] | None = None,
                   recovery: Recovery | None = None) -> TrainingResult:
    """Train for ``train.epochs`` and save ``checkpoint``."""
    seed_everything(cfg.seed)
    engine = cam_engine(cfg, data, model_spec(cfg.encoder, None, data.n_classes), setup(cfg.runtime))
    t0 = time.perf_counter()
    engine.fit(on_epoch, recovery, round=0)  # the records' columns are ISIM's
    if distributed.is_main():
        engine.save(checkpoint, cfg.train.epochs)
    return TrainingResult(engine.history, time.perf_counter() - t0, engine.model)
