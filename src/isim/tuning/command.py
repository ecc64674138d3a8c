"""Command ``isim tune`` (on demand, not a stage of `dvc repro`): an Optuna study over
``tune.space``, then its outcome as files: best params, trials table, pictures. A study lives in
its storage and continues when run again, so DVC has nothing to decide; keeping it out of the
pipeline files also keeps `dvc status` clean in a project that has never tuned."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from isim.config import Config
from isim.data.prepared import Prepared
from isim.tuning import launcher, results
from isim.tuning.storage import redact
from isim.tuning.study import open_study
from isim.tuning.study_runs import open_tracker
from isim.tuning.worker import Worker, install_sigterm

log = logging.getLogger(__name__)


def run(cfg: Config, params: Path, data_dir: Path, out: Path, workdir: Path, workers: int | None,
        worker: int | None = None) -> None:
    if worker is not None:  # started by the launcher below
        run_worker(cfg, data_dir, workdir, worker)
        return
    n = workers or cfg.tune.workers
    restarts = launcher.launch(cfg, params, data_dir, out, workdir, n)
    result = finish(cfg, out)
    if restarts:
        log.warning("%d worker(s) had to be restarted; their trials were rerun (see %s)", restarts,
                    out / "trials.csv")
    log.info("tuned: %s", result)


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


__all__ = ["run", "run_worker", "finish", "worker_config"]
