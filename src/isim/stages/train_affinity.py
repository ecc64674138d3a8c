"""Stage ``train_affinity``: AffinityNet on the affinity labels, its losses and checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed
from isim.config import Config
from isim.data.layout import Prepared
from isim.stages import recovery_for, train_stage
from isim.training.affinitynet import train_affinity

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, labels: Path, checkpoint: Path, metrics: Path, plots: Path,
        recovery_dir: Path | None = None) -> None:
    data = Prepared.open(data_dir)
    if distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    recovery = recovery_for(cfg, data, recovery_dir, labels)
    summary = train_stage(cfg, "train_affinity", lambda on_epoch: train_affinity(
        cfg, data, labels, checkpoint, on_epoch=on_epoch, recovery=recovery), "affinity",
        ("epoch", "loss", "bg_pos", "fg_pos", "neg"), metrics, plots, recovery)
    log.info("trained AffinityNet: %s", summary)
