"""A generic MLflow session: a run's client calls guarded so that tracking never costs results
(retried while SQLite is busy; a failure warns once and ends tracking for the run, or raises
under ``strict``). Nothing here knows this project's stages or reports (isim.tracking does)."""
from __future__ import annotations

import logging
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from isim.errors import IsimError

log = logging.getLogger(__name__)


class TrackingError(IsimError, RuntimeError):
    """tracking.strict is set and MLflow failed."""


def git_commit(cwd: Path | None = None) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "nogit"


def reachable(uri: str) -> bool:
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def retrying(fn, *a, wait_s: float = 120.0, **kw):
    """``fn`` again while SQLite says "database is locked" (several processes logging to one
    mlflow.db, e.g. tuning workers), so a busy store delays a record instead of dropping it.
    Hand-written on purpose: one condition and a capped doubling wait are ten lines, and no retry
    library is in the pinned set (tenacity would be a new dependency for this loop alone)."""
    deadline, delay = time.monotonic() + wait_s, 0.05
    while True:
        try:
            return fn(*a, **kw)
        except Exception as e:
            if "database is locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def ui_links(uri: str, experiment_id: str, run_id: str) -> str:
    """Where a person looks at ``run_id``: the experiment's runs table and the run's page, in
    MLflow's model-training view (``workflowType``: a plain `mlflow ui` opens a fresh browser on
    its GenAI view), on a tracking server or in `isim ui` on a local store."""
    if uri.startswith(("http://", "https://")):
        base, start = uri.rstrip("/"), ""
    else:
        base, start = "http://127.0.0.1:5000", " after `isim ui`"
    runs = f"{base}/#/experiments/{experiment_id}/runs"
    view = "?workflowType=machine_learning"
    return f"{runs}{view} (this run: {runs}/{run_id}{view}){start}"


def source_tags(name: str) -> dict[str, str]:
    """What MLflow's Source column shows: the entry point and the code version."""
    return {"mlflow.source.name": name, "mlflow.source.type": "PROJECT", "mlflow.source.git.commit": git_commit()}


class NullSession:
    """Used when tracking is off or unavailable: every call is a no-op."""

    active = False

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, headline: bool = False) -> None: ...
    def log_image(self, image: np.ndarray, name: str) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def warn(self, text: str) -> None: ...


class Session(NullSession):
    """One MLflow run (``run_id``), optionally under a ``parent`` run that headline metrics and
    warnings also go to. Failures disable it with one warning, or raise under ``strict``."""

    active = True

    def __init__(self, client: Any, run_id: str, parent: str | None = None, strict: bool = False):
        self.client, self.run_id, self.parent, self.strict = client, run_id, parent, strict

    def guard(self, what: str, fn, *a, **kw) -> None:
        """``fn(*a, **kw)`` against MLflow; a failure is logged and ends tracking for this run (it
        raises only under ``strict``): tracking must never cost results."""
        if not self.active:
            return
        try:
            retrying(fn, *a, **kw)
        except Exception as e:  # noqa: BLE001 - tracking must never cost results
            if self.strict:
                raise TrackingError(f"tracking.strict: {what} failed: {e}") from e
            log.warning("MLflow %s failed (%s: %s); continuing without tracking", what, type(e).__name__, e)
            self.active = False

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, headline: bool = False) -> None:
        """``headline``: also on the parent run, so runs compare in MLflow's runs table."""
        from mlflow.entities import Metric  # mlflow is imported only when tracking is on
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)]
        self.guard("log_metrics", self.client.log_batch, self.run_id, metrics=items)
        if headline and self.parent:
            self.guard("log_metrics", self.client.log_batch, self.parent, metrics=items)

    def log_image(self, image: np.ndarray, name: str) -> None:
        self.guard("log_image", self.client.log_image, self.run_id, image, name)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        self.guard("log_params", self.client.log_batch, self.run_id, params=items)

    def warn(self, text: str) -> None:
        """A warning people must see in the UI: the run's ``warning`` tag (on the parent run too,
        so it shows in the runs table) and ``warnings.txt``."""
        for run_id in filter(None, (self.run_id, self.parent)):
            self.guard("set_tag", self.client.set_tag, run_id, "warning", text[:5000])
        self.guard("log_text", self.client.log_text, self.run_id, text + "\n", "warnings.txt")
