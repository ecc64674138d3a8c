"""Stage ``train_affinity``: AffinityNet on the affinity labels, its losses and checkpoint."""
from __future__ import annotations

import logging
from pathlib import Path

from isim.config import Config
from isim.data.layout import Prepared
from isim.io import write_csv, write_json
from isim.tracking import stage_run
from isim.training.affinity import train_affinity

log = logging.getLogger(__name__)


def run(cfg: Config, data_dir: Path, labels: Path, checkpoint: Path, metrics: Path, plots: Path) -> None:
    data = Prepared.open(data_dir)
    checkpoint.unlink(missing_ok=True)
    with stage_run(cfg, "train_affinity") as tr:
        result = train_affinity(cfg, data, labels, checkpoint, on_epoch=lambda rec: tr.log_metrics(
            {f"affinity_{k}": v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"]))
        hist = result["history"]
        write_csv(plots, [{k: h[k] for k in ("epoch", "loss", "bg_pos", "fg_pos", "neg")} for h in hist])
        summary = {"epochs": len(hist), "seconds": round(result["seconds"], 3), "first_loss": hist[0]["loss"],
                   "final_loss": hist[-1]["loss"]}
        write_json(metrics, summary)
        tr.log_metrics(summary)
    log.info("trained AffinityNet: %s", summary)
