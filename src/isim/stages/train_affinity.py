"""Stage ``train_affinity``: AffinityNet on the affinity labels, its losses and checkpoint; with
ground truth, every epoch also measures its affinities on the holdout images' true pairs
(training/affinity_pairs.py: PairProbe), in the metrics, the plots CSV and MLflow."""
from __future__ import annotations

import logging
from pathlib import Path

from isim import distributed, settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.stages import recovery_for, train_stage
from isim.training.affinity_pairs import PairProbe, train_affinity

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, labels: Path, checkpoint: Path, metrics: Path, plots: Path,
        recovery_dir: Path | None = None) -> None:
    data = Prepared.open(data_dir)
    if distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    recovery = recovery_for(cfg, data, recovery_dir, labels)
    holdout = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction) if data.has_masks else []
    probe = PairProbe(data, holdout, cfg.transform, cfg.affinity.radius, cfg.affinity.cell_purity) if holdout else None
    pair_keys = ("pair_acc_bg", "pair_acc_fg", "pair_acc_neg") if probe else ()
    summary = train_stage(cfg, "train_affinity", lambda on_epoch, tr: train_affinity(
        *settings.affinity(cfg), data, labels, checkpoint, on_epoch=on_epoch, recovery=recovery, probe=probe),
        ("epoch", "loss", "bg_pos", "fg_pos", "neg", *pair_keys), metrics, plots, recovery, prefix="affinity_",
        summarize=lambda result: {k: v for k, v in result.history[-1].figures.items() if k in pair_keys})
    log.info("trained AffinityNet: %s", summary)
