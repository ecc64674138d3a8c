"""The pieces `isim tune` puts together: a study's MLflow parent, one worker's loop, and the
study's outcome (files + MLflow) once the budget is spent."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import optuna

from isim.config import Config
from isim.data.layout import Prepared
from isim.tuning import results
from isim.tuning.storage import budget_lock, redact
from isim.tuning.study import open_study
from isim.tuning.tracking import StudyTracker
from isim.tuning.worker import Worker, install_sigterm

log = logging.getLogger(__name__)
PARENT_ATTR = "isim:mlflow_parent"


def open_tracker(cfg: Config, study: optuna.Study, storage: Any, url: str, data_dir: Path | None = None
                 ) -> StudyTracker | None:
    """The study's MLflow parent run: made once (under the budget lock, with ``data_dir`` as its
    input dataset), found by every worker."""
    with budget_lock(url, storage, study.study_name):
        parent = study.user_attrs.get(PARENT_ATTR)
        tracker = StudyTracker.open(cfg, study.study_name, parent, redact(url), data_dir)
        if tracker is not None and parent is None:
            study.set_user_attr(PARENT_ATTR, tracker.parent)
    return tracker


def worker_config(cfg: Config) -> Config:
    """This worker's share of the host: threads from the launcher, CRF pool no larger than it."""
    rt = cfg.runtime
    threads = rt.threads or int(os.environ.get("ISIM_WORKER_THREADS", "0"))
    crf = rt.crf_workers if cfg.tune.workers == 1 else min(rt.crf_workers, max(0, threads - 1))
    return cfg.model_copy(update={"runtime": rt.model_copy(update={"threads": threads, "crf_workers": crf})})


def run_worker(cfg: Config, data_dir: Path, workdir: Path, index: int) -> int:
    install_sigterm()
    cfg = worker_config(cfg)
    study, storage, url = open_study(cfg, worker=index)
    tracker = open_tracker(cfg, study, storage, url, data_dir)
    n = Worker(cfg, study, storage, url, Prepared.open(data_dir), workdir / cfg.tune.study, tracker).run()
    log.info("worker %d: %d trial(s) run; study budget spent", index, n)
    return n


def finish(cfg: Config, out: Path) -> dict[str, Any]:
    """best.yaml, trials.csv, plots/ under ``out``; the MLflow parent closed with the same."""
    study, storage, url = open_study(cfg)
    best, counts, figs = results.write(study, out, redact(url), cfg.tune.overrides)
    tracker = open_tracker(cfg, study, storage, url)
    if tracker is not None:
        tracker.finish(best, counts, figs, [out / "best.yaml", out / "trials.csv"])
    import matplotlib.pyplot as plt
    plt.close("all")
    log.info("study %r: %s; best %s", study.study_name, counts, best)
    return {"best": best, "counts": counts}


__all__ = ["run_worker", "finish", "open_tracker", "worker_config"]
