"""`isim tune --workers N`: N worker processes on this host, one GPU each (round robin when
there are fewer GPUs than workers) or, without GPUs, an equal share of the CPU threads.

The launcher opens the study (and its MLflow parent run) before any worker starts, watches the
workers, and when one dies (killed, out of memory, node trouble) fails the trial it was running,
queues it again with the same parameters and starts a new worker, while budget is left. This
is what the journal file storage lacks: Optuna's heartbeat exists for RDB storages only. More
machines join a study by running the same command against the same storage URL.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from isim import runtime
from isim.config import Config
from isim.tuning.storage import budget_lock
from isim.tuning.study import open_study
from isim.tuning.study_runs import open_tracker
from isim.tuning.worker import budget_left, reap

log = logging.getLogger(__name__)


def gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES respected)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU workers
        return []


def worker_env(k: int, n: int, gpu_ids: list[str], cpu_count: int) -> dict[str, str]:
    """Environment of worker ``k`` of ``n``: its GPU, and its share of the CPU threads."""
    env = dict(os.environ)
    threads = max(1, cpu_count // n)
    env["ISIM_WORKER_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids[k % len(gpu_ids)]
    return env


def launch(cfg: Config, params: Path, data: Path, out: Path, workdir: Path, workers: int) -> int:
    """Run the study with ``workers`` processes; returns how many worker restarts were needed."""
    study, storage, url = open_study(cfg)
    open_tracker(cfg, study, storage, url, data)  # the MLflow parent exists before workers start
    gpu_ids, cpus = gpus(), runtime.cpus()
    log.info("study %r: %d worker(s) on %s", study.study_name, workers,
             f"GPUs {','.join(gpu_ids)}" if gpu_ids else f"CPU, {max(1, cpus // workers)} thread(s) each")

    def start(k: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "isim.cli", "--params", str(params), "tune", "--data", str(data),
               "--out", str(out), "--workdir", str(workdir), "--worker", str(k)]
        return subprocess.Popen(cmd, env=worker_env(k, workers, gpu_ids, cpus))

    procs = {k: start(k) for k in range(workers)}
    restarts, max_restarts = 0, 3 * workers + cfg.tune.retries * cfg.tune.n_trials
    try:
        while procs:
            time.sleep(0.5)
            for k, p in list(procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                del procs[k]
                if rc == 0:
                    continue
                log.warning("worker %d (pid %d) exited with %s", k, p.pid, rc if rc > 0 else f"signal {-rc}")
                with budget_lock(url, storage, study.study_name):
                    reap(study, storage, cfg)
                    more = budget_left(study, cfg)
                if more and restarts < max_restarts:
                    restarts += 1
                    procs[k] = start(k)
                    log.info("worker %d restarted (pid %d)", k, procs[k].pid)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait()
    return restarts


__all__ = ["launch", "gpus", "worker_env"]
