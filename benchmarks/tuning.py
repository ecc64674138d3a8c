"""Tuning figures (README "Tuning"), each with its baseline from the same run:

- scaling: trials per hour of 2 single-thread workers vs 1 single-thread worker
  (same trials: fixed crf_freq, so every trial costs the same);
- pruning: wall time and best value of a 12-trial study with the median pruner vs none;
- storage overhead per trial, journal file and PostgreSQL: the storage calls a worker makes for
  one trial (budget lock, reap, ask, suggest, one report per epoch, prune checks, tell), timed
  against the mean trial time of the pruning study;
- GPU: 1 vs 2 workers on one GPU, when a GPU is present.

    .venv/bin/python benchmarks/tuning.py [--quick]

Trials train on a reduced embedded dataset (160 train / 40 val images, 96 px, 8 epochs) so the
whole run takes about 15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL server of the tests


def params(quick: bool, **tune) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["synthetic"].update(n_train=64 if quick else 160, n_val=16 if quick else 40, size=96,
                                  body_size=[40, 64])
    p["transform"].update(resize_long=[72, 120], crop=80)
    p["cam"]["scales"] = [1.0, 0.5]
    p["train"].update(epochs=4 if quick else 8)
    p["rounds"]["warmup_epochs"] = 2
    p["tracking"]["enabled"] = False
    p["runtime"].update(threads=1, crf_workers=0)
    p["tune"].update(tune)
    return p


def tune(work: Path, p: dict, workers: int, env: dict | None = None) -> tuple[float, optuna.Study]:
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    e = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    if not (work / "data/prepared").exists():
        subprocess.run(["isim", "prepare", "--out", "data/prepared"], cwd=work, env=e, check=True, capture_output=True)
    t0 = time.perf_counter()
    r = subprocess.run(["isim", "tune", "--data", "data/prepared", "--out", "results", "--workers", str(workers)],
                       cwd=work, env=e, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    url = e.get("ISIM_TUNE_STORAGE")
    storage = (optuna.storages.RDBStorage(url) if url else
               optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
                   str(work / "tune/optuna.journal"))))
    return wall, optuna.load_study(study_name=p["tune"]["study"], storage=storage)


def busy_hours(study: optuna.Study) -> float:
    """From the first trial's start to the last trial's end (process start-up excluded)."""
    ts = [t for t in study.get_trials() if t.datetime_start and t.datetime_complete]
    return (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)).total_seconds() / 3600


def scaling(quick: bool) -> None:
    space = {"threshold": {"type": "float", "low": 0.1, "high": 0.3},
             "lr_encoder": {"type": "log_float", "low": 0.03, "high": 0.3},
             "crf_freq": {"type": "categorical", "choices": [2]}}
    n = 4 if quick else 8
    rates = {}
    for workers in (1, 2):
        work = Path(tempfile.mkdtemp(prefix=f"isim-scale{workers}-"))
        p = params(quick, n_trials=n, pruner="none", sampler="random", workers=workers, space=space)
        wall, study = tune(work, p, workers)
        rates[workers] = (n / busy_hours(study), n / (wall / 3600))
        shutil.rmtree(work, ignore_errors=True)
    print(f"scaling: 1 worker {rates[1][0]:.0f} trials/h, 2 workers {rates[2][0]:.0f} trials/h -> "
          f"{rates[2][0] / rates[1][0]:.2f}x (target >= 1.8x); whole command incl. start-up: "
          f"{rates[1][1]:.0f} vs {rates[2][1]:.0f} trials/h -> {rates[2][1] / rates[1][1]:.2f}x")


def pruning(quick: bool) -> float:
    n = 6 if quick else 12
    out = {}
    for pruner in ("none", "median"):
        work = Path(tempfile.mkdtemp(prefix=f"isim-prune-{pruner}-"))
        p = params(quick, n_trials=n, pruner=pruner, sampler="tpe", seed=0)
        p["runtime"].update(threads=2)
        wall, study = tune(work, p, 1)
        states = [t.state.name.lower() for t in study.get_trials()]
        durations = [t.duration.total_seconds() for t in study.get_trials() if t.duration]
        out[pruner] = (wall, study.best_value, states.count("pruned"), statistics.mean(durations))
        shutil.rmtree(work, ignore_errors=True)
    (w0, b0, _, mean_trial), (w1, b1, pruned, _) = out["none"], out["median"]
    print(f"pruning: {n} trials without pruner {w0:.0f} s (best {b0:.2f} mIoU), with median pruner {w1:.0f} s "
          f"(best {b1:.2f} mIoU, {pruned} pruned) -> {100 * (1 - w1 / w0):.0f}% less wall time (target >= 30%), "
          f"best value {b1 - b0:+.2f} mIoU (target within 1)")
    return mean_trial


def storage_overhead(mean_trial_s: float, quick: bool) -> None:
    from isim.config import from_dict
    from isim.tuning import space as space_mod
    from isim.tuning.storage import budget_lock
    from isim.tuning.study import open_study
    from isim.tuning.worker import WORKER_ATTR, budget_left, process_id, reap

    n = 5 if quick else 20
    epochs = 4 if quick else 8
    targets = {"journal": lambda d: f"journal:{d}/optuna.journal"}
    pg = None
    try:
        from pg import PASSWORD, LocalPostgres
        pg = LocalPostgres()
        os.environ["PGPASSWORD"] = PASSWORD
        targets["postgresql"] = lambda d: pg.create_db("bench")
    except Exception as e:  # noqa: BLE001
        print(f"storage overhead: PostgreSQL not measured ({e})")
    try:
        for name, make in targets.items():
            work = Path(tempfile.mkdtemp(prefix="isim-storage-"))
            cfg = from_dict({**params(quick), "tune": {**params(quick)["tune"], "storage": make(work),
                                                       "n_trials": n + 1, "pruner": "median"}})
            study, storage, url = open_study(cfg)
            t0 = time.perf_counter()
            for _ in range(n):
                with budget_lock(url, storage, study.study_name):
                    reap(study, storage, cfg)
                    assert budget_left(study, cfg)
                    trial = study.ask()
                    storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, process_id())
                space_mod.suggest(trial, cfg)
                for epoch in range(3, epochs + 1):
                    trial.report(50.0 + epoch, epoch)
                    trial.should_prune()
                study.tell(trial, 60.0)
            per_trial = (time.perf_counter() - t0) / n
            print(f"storage overhead ({name}): {1000 * per_trial:.1f} ms per trial = "
                  f"{100 * per_trial / mean_trial_s:.2f}% of a {mean_trial_s:.1f} s trial (target < 1%)")
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if pg is not None:
            pg.stop()


def gpu(quick: bool) -> None:
    """1 vs 2 workers sharing one GPU: trials per hour and mean GPU utilisation (nvidia-smi)."""
    import threading

    import torch
    if not torch.cuda.is_available():
        print("gpu: no GPU available on this machine; 1 vs 2 workers on one GPU not measured")
        return
    n = 4 if quick else 8
    space = {"threshold": {"type": "float", "low": 0.1, "high": 0.3},
             "crf_freq": {"type": "categorical", "choices": [2]}}
    res = {}
    for workers in (1, 2):
        util: list[float] = []
        stop = threading.Event()

        def sample(stop: threading.Event = stop, util: list[float] = util) -> None:
            while not stop.wait(0.5):
                r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                    "-i", "0"], capture_output=True, text=True)
                if r.returncode == 0 and r.stdout.strip():
                    util.append(float(r.stdout.split()[0]))
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        work = Path(tempfile.mkdtemp(prefix=f"isim-gpu{workers}-"))
        p = params(quick, n_trials=n, pruner="none", sampler="random", workers=workers, space=space)
        p["runtime"].update(device="cuda", threads=4, crf_workers=4)
        _, study = tune(work, p, workers, env={"CUDA_VISIBLE_DEVICES": "0"})
        stop.set()
        th.join()
        res[workers] = (n / busy_hours(study), statistics.mean(util) if util else float("nan"))
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu ({torch.cuda.get_device_name(0)}): 1 worker {res[1][0]:.0f} trials/h at {res[1][1]:.0f}% GPU, "
          f"2 workers {res[2][0]:.0f} trials/h at {res[2][1]:.0f}% GPU -> {res[2][0] / res[1][0]:.2f}x")


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    args = a.parse_args()
    from machine import print_reference  # benchmarks/machine.py: what the times below scale by
    print_reference()
    scaling(args.quick)
    mean_trial = pruning(args.quick)
    storage_overhead(mean_trial, args.quick)
    gpu(args.quick)


if __name__ == "__main__":
    main()
