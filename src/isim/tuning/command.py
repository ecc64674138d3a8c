"""Command ``isim tune`` (on demand, not a stage of `dvc repro`): an Optuna study over
``tune.space``, then its outcome as files: best params, trials table, pictures. A study lives in
its storage and continues when run again, so DVC has nothing to decide; keeping it out of the
pipeline files also keeps `dvc status` clean in a project that has never tuned."""
from __future__ import annotations

import logging
from pathlib import Path

from isim.config import Config

log = logging.getLogger(__name__)


def run(cfg: Config, params: Path, data_dir: Path, out: Path, workdir: Path, workers: int | None,
        worker: int | None = None) -> None:
    from isim.tuning import launcher
    from isim.tuning.run import finish, run_worker
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
