"""One tuning worker: ask a trial, train ISIM with its settings, tell the result; repeat
until the study's budget (trials and/or time, shared by every worker) is spent.

A trial is ``training.isim.train_isim`` itself (no second implementation) with a ``holdout``:
every round scores the pseudo masks of ``holdout`` images it never trains on, after CRF. That
mIoU is reported at the epoch of the round (and carried over the epochs until the next round,
so trials with different ``crf_freq`` are compared at the same step) and the pruner may stop
the trial there. A trial's own round checkpoints live in ``<workdir>/trial_NNNN``; a trial
rerun after its worker died resumes from the last of them.
"""
from __future__ import annotations

import datetime
import logging
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import psutil
import torch
from optuna.trial import TrialState

from isim import run_layout as layout
from isim import settings
from isim.config import Config
from isim.data.prepared import Prepared
from isim.errors import IsimError
from isim.mask_scores import MaskSetSummary
from isim.models import load_affinity
from isim.pseudo import choice, confident, masks
from isim.pseudo.cam import final_cams_or_model
from isim.pseudo.walk import RandomWalk, best_rule
from isim.runtime import setup
from isim.training.affinity_pairs import train_affinity
from isim.training.engine import TrainingError
from isim.training.isim import train_isim
from isim.tuning import space
from isim.tuning.storage import budget_lock, fail_stale, has_heartbeat, retry_callback, trial_id

log = logging.getLogger(__name__)
WORKER_ATTR = "isim:worker"     # host:pid:start-time of the process running a trial
STARTED_ATTR = "isim:started"   # when the study's first trial started (for tune.timeout_s)
REASON_ATTR = "reason"          # why a trial was pruned or failed


def process_id(pid: int | None = None) -> str:
    p = psutil.Process(pid or os.getpid())
    return f"{socket.gethostname()}:{p.pid}:{p.create_time():.2f}"


def _alive(worker: str) -> bool:
    host, pid, started = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's worker: its heartbeat (RDB storages) tells
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except psutil.Error:
        return False


def fail_and_requeue(study: optuna.Study, storage: Any, cfg: Config, tid: int, reason: str) -> bool:
    """A running trial marked FAIL with ``reason`` and queued again (Optuna's retry callback, which
    records the retry history); False when it was no longer running."""
    storage.set_trial_user_attr(tid, REASON_ATTR, reason)
    if not storage.set_trial_state_values(tid, TrialState.FAIL):
        return False
    retry_callback(cfg.tune)(study, storage.get_trial(tid))
    return True


def reap(study: optuna.Study, storage: Any, cfg: Config) -> list[int]:
    """Fail and queue again every running trial whose worker process on this host is gone
    (any storage), and every trial whose heartbeat went stale (RDB storages). Returns the
    numbers of the trials failed here."""
    failed = []
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.system_attrs.get(WORKER_ATTR)
        # a trial is marked with its worker right after it is asked for; one still unmarked a
        # minute later lost its worker in between
        orphan = worker is None and t.datetime_start is not None and (now - t.datetime_start).total_seconds() > 60
        if not orphan and (worker is None or _alive(worker)):
            continue
        try:
            if fail_and_requeue(study, storage, cfg, trial_id(t), f"worker {worker or '?'} died; trial rerun"):
                failed.append(t.number)
                log.warning("trial %d: its worker %s is gone; failed and queued again", t.number, worker)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
    fail_stale(study, storage)
    return failed


def budget_left(study: optuna.Study, cfg: Config) -> bool:
    """Trials still to run: queued reruns, or fewer trials than ``tune.n_trials`` (a failed trial
    that was rerun counts once) and time left."""
    started = study.user_attrs.get(STARTED_ATTR)
    if cfg.tune.timeout_s and started is not None and time.time() > started + cfg.tune.timeout_s:
        return False
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    rerun = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    used = sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in rerun))
    return used < cfg.tune.n_trials


class _Heartbeat:
    """Beats for the running trial on RDB storages (Optuna does this only inside optimize())."""

    def __init__(self, storage: Any, trial_id: int, every: int):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if has_heartbeat(storage):
            def beat() -> None:
                while not self._stop.wait(every):
                    storage.record_heartbeat(trial_id)
            storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


class Worker:
    """Runs trials of one study in this process until its budget is spent."""

    def __init__(self, cfg: Config, study: optuna.Study, storage: Any, url: str, data: Prepared,
                 workdir: Path, tracker: Any = None):
        self.cfg, self.study, self.storage, self.url, self.data = cfg, study, storage, url, data
        self.workdir, self.tracker = workdir, tracker
        self.holdout = data.holdout_ids(cfg.holdout.split, cfg.holdout.fraction)
        if not self.holdout:
            raise IsimError(f"holdout.split {cfg.holdout.split!r} has no images: the tuning objective needs a "
                            "labelled split that training does not report (README \"Tuning\")")

    def run(self) -> int:
        """Trials until the budget is spent; returns how many this worker ran."""
        n = 0
        while True:
            with budget_lock(self.url, self.storage, self.study.study_name):
                reap(self.study, self.storage, self.cfg)
                if not budget_left(self.study, self.cfg):
                    return n
                if STARTED_ATTR not in self.study.user_attrs:
                    self.study.set_user_attr(STARTED_ATTR, time.time())
                with warnings.catch_warnings():  # this worker beats for its trials itself (_Heartbeat)
                    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
                    trial = self.study.ask()
                self.storage.set_trial_system_attr(trial_id(trial), WORKER_ATTR, process_id())
            self.run_trial(trial)
            n += 1

    def run_trial(self, trial: optuna.Trial) -> None:
        values = space.suggest(trial, self.cfg)
        frozen = self.storage.get_trial(trial_id(trial))
        history = frozen.system_attrs.get("retry_history", [])
        tdir = self.workdir / f"trial_{trial.number:04d}"
        resume = None
        if history:  # a rerun: take over the dead attempt's folder and resume from its last round
            prev = self.workdir / f"trial_{history[-1]:04d}"
            if prev.is_dir() and not tdir.exists():
                prev.rename(tdir)
            resume = layout.last_checkpoint(tdir / "checkpoints")
        elif tdir.exists():
            shutil.rmtree(tdir)
        beat = _Heartbeat(self.storage, trial_id(trial), self.cfg.tune.heartbeat_s)
        run = self.tracker.trial(trial.number, values, history) if self.tracker else None
        t0 = time.perf_counter()
        state, reason, value = TrialState.FAIL, "", None
        try:
            tcfg = space.trial_config(self.cfg, values)
            value = self._train(trial, tcfg, tdir, resume, run)
            state = TrialState.COMPLETE
        except optuna.TrialPruned as e:
            state, reason = TrialState.PRUNED, str(e)
        except TrainingError as e:  # NaN loss, all-background masks
            reason = f"diverged or learned nothing: {e}"
        except (torch.OutOfMemoryError, MemoryError) as e:
            reason = f"out of memory: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
        except IsimError as e:
            reason = str(e)
        except Exception as e:  # a trial never stops the study
            log.exception("trial %d failed", trial.number)
            reason = f"{type(e).__name__}: {e}"
        except BaseException:  # SIGTERM / Ctrl-C: give the trial back before leaving
            beat.stop()
            fail_and_requeue(self.study, self.storage, self.cfg, trial_id(trial), "worker stopped; trial rerun")
            if run:
                run.end("FAIL", "worker stopped", None, time.perf_counter() - t0)
            raise
        beat.stop()
        if reason:
            trial.set_user_attr(REASON_ATTR, reason[:1000])
            log.warning("trial %d %s: %s", trial.number, state.name.lower(), reason)
        self.study.tell(trial, value, state=state)
        if run:
            run.end(state.name, reason, value, time.perf_counter() - t0)
        shutil.rmtree(tdir, ignore_errors=True)

    def _train(self, trial: optuna.Trial, tcfg: Config, tdir: Path, resume: Path | None, run: Any) -> float:
        reported: dict[int, float] = {}

        def report(r: int, summary: MaskSetSummary) -> None:
            assert summary.holdout is not None and summary.after_epoch is not None  # every trial round has them
            v, epoch = summary.holdout.crf_miou, summary.after_epoch
            last = max(reported, default=tcfg.rounds.warmup_epochs)
            for step in range(last + 1, epoch):  # the labels of the last round were in use until now
                trial.report(reported[last], step)
                reported[step] = reported[last]
            trial.report(v, epoch)
            reported[epoch] = v
            if run:
                run.round(r, summary)
            if trial.should_prune():
                raise optuna.TrialPruned(f"round {r} (epoch {epoch}): holdout mIoU {v:.2f} below the "
                                         f"{self.cfg.tune.pruner} pruner's bar")

        pseudo = tdir / "pseudo"
        if resume is not None:  # rounds done before the worker died: their values again
            for r in range(1, layout.round_number(resume) + 1):
                done = layout.round_dir(pseudo, r)
                if layout.summary_path(done).is_file():
                    report(r, layout.read_summary(done))
            trial.set_user_attr("resumed_from", resume.name)
        result = train_isim(*settings.isim(tcfg), self.data, tdir / "checkpoints",
                            pseudo, resume=resume, holdout=self.holdout, on_round=lambda r, d, s: report(r, s))
        final = result.rounds[-1].holdout
        assert final is not None  # every round of a trial scores the holdout
        if tcfg.tune.objective == "isim":
            return float(final.crf_miou)
        scores = chain_scores(tcfg, self.data, tdir, self.holdout)
        trial.set_user_attr("chain", scores)
        if run:
            run.chain(scores)
        return scores[choice.best(scores)]


def chain_scores(tcfg: Config, data: Prepared, tdir: Path, holdout: list[str]) -> dict[str, float]:
    """The holdout mIoU of every mask set the final segmenter chooses from (isim.pseudo.choice),
    after the trial's ISIM training in ``tdir``: its last round after CRF, and the walk's masks
    before and after CRF, with AffinityNet trained and the walk's rule chosen as the stages do."""
    pseudo, device, ac = tdir / "pseudo", setup(tcfg.runtime), tcfg.affinity
    model, cams = final_cams_or_model(tcfg.cam.keep, tdir / "checkpoints", pseudo, device)
    cam = replace(settings.cams(tcfg), source=cams)
    confident.generate(model, data, data.ids("train"), tdir / "affinity", cam, tcfg.crf, ac.fg_threshold,
                             ac.bg_threshold, device, tcfg.runtime.crf_workers)
    train_affinity(*settings.affinity(tcfg), data, tdir / "affinity", tdir / "affinity.pt")
    walker = RandomWalk(load_affinity(tdir / "affinity.pt", device), tcfg.transform, ac.radius, tcfg.random_walk,
                        device)
    walker, _ = best_rule(model, data, holdout, walker, cam, tcfg.runtime.crf_workers, device)
    made = replace(settings.masks(tcfg, threshold=walker.rule.value), cam=cam)
    walked = masks.score(model, data, holdout, made, device, "random walk holdout", walker)
    isim = layout.holdout_scores(layout.rounds_of(pseudo)[-1])
    assert isim is not None  # every round of a trial scores the holdout
    return {"isim_crf": isim.miou("crf"), "rw": walked.raw_miou, "rw_crf": walked.crf_miou}


def install_sigterm() -> None:
    """SIGTERM (a Kubernetes eviction, scancel) ends the worker like Ctrl-C: its trial is queued again."""
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _raise)


__all__ = ["Worker", "reap", "budget_left", "process_id", "install_sigterm", "WORKER_ATTR", "REASON_ATTR"]
