"""One module per dvc.yaml stage. Each ``run(cfg, ...)`` reads the stage's inputs, calls the
method code, writes all of the stage's outputs and records them in MLflow. Paths come from
the caller (dvc.yaml's ``cmd``): they are written in one place."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def remove_old_outputs(*dirs: Path) -> None:
    """Outputs of an earlier run must not mix with this one's (DVC removes them too)."""
    for d in dirs:
        if d.exists():
            shutil.rmtree(d)


def model_example(crop: int):
    """An input batch for exporting a model (batch 2 keeps the batch dimension dynamic)."""
    import numpy as np
    return np.zeros((2, 3, crop, crop), np.float32)


def warn_if_photo_sized(transform: Any, data: Any, sample: int = 32) -> None:
    """Images much larger than ``transform.resize_long`` (photos under the settings of the 128 px
    embedded images) train on a fraction of each image and refine with CRF kernels that are far
    too small: say which preset fits."""
    from PIL import Image
    ids = data.ids("train")[:sample]
    sides = []
    for id_ in ids:
        with Image.open(data.image_path(id_)) as im:
            sides.append(max(im.size))
    if sides:
        median = sorted(sides)[len(sides) // 2]
        if median > 2 * transform.resize_long[1]:
            log.warning("images are about %d px on their long side but transform.resize_long is %s (crop %d): "
                        "settings for the 128 px embedded images. For photographs apply pipelines/photo.yaml "
                        "(`isim params pipelines/photo.yaml`; README \"Your own data\")", median,
                        transform.resize_long, transform.crop)


def recovery_for(cfg: Any, data: Any, folder: Path | None, masks: Path | None = None) -> Any:
    """The stage's recovery state (training/recovery.py) in ``folder``, outside its outputs, bound
    to the params, code, data and the ``masks`` it trains on; None without a folder."""
    if folder is None:
        return None
    from isim.training.recovery import Recovery, fingerprint
    return Recovery(folder, fingerprint(cfg.to_dict(), data.root, data.ids("train"), masks))


def train_stage(cfg: Any, stage: str, train: Any, plot_keys: tuple[str, ...], metrics: Path, plots: Path,
                recovery: Any = None, prefix: str = "", summarize: Any = None, after: Any = None,
                headline: bool = False) -> dict:
    """The skeleton of every training stage: ``train(on_epoch, tracker)`` runs in the stage's
    MLflow run (each epoch's record logged, its keys prefixed with ``prefix``); rank 0 then writes
    the per-epoch CSV (``plot_keys``) and the metrics JSON (epochs, seconds, first and final loss,
    and ``summarize(result)``), logs it (to the pipeline's run too with ``headline``), calls
    ``after(tracker, result)`` and clears the ``recovery`` state; returns the summary."""
    from isim import distributed
    from isim.io import write_csv, write_json
    from isim.tracking import stage_run
    with stage_run(cfg, stage) as tr:
        result = train(lambda rec: tr.log_metrics({f"{prefix}{k}": v for k, v in rec.row().items() if k != "epoch"},
                                                  step=rec.epoch), tr)
        hist = result.history
        summary = {"epochs": len(hist), "seconds": round(result.seconds, 3), "first_loss": hist[0].loss,
                   "final_loss": hist[-1].loss, **(summarize(result) if summarize is not None else {})}
        if distributed.is_main():  # rank 0 alone writes
            write_csv(plots, [{k: row.get(k) for k in plot_keys} for row in (h.row() for h in hist)])
            write_json(metrics, summary)
            tr.log_metrics(summary, headline=headline)
            if after is not None:
                after(tr, result)
    if recovery is not None and distributed.is_main():  # every output is written: nothing left to recover
        recovery.clear()
    return summary
