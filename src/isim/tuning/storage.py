"""Where a study lives, for every scale, and the lock that keeps its trial budget exact.

- ``""`` / ``journal:PATH``: Optuna's journal file (default ``tune/optuna.journal``), safe for
  several processes on one host; the default, with nothing to install or start.
- ``sqlite:///PATH``: one process (SQLite serialises writers).
- any SQLAlchemy URL, ``postgresql://user@host/db`` above all: several machines. The password
  comes from the environment (``PGPASSWORD``), or the whole URL from ``ISIM_TUNE_STORAGE``;
  it is never written to params.yaml, logs or MLflow (``redact``).
"""
from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from isim.config import TuneCfg
from isim.errors import IsimError

DEFAULT_JOURNAL = "tune/optuna.journal"
ENV = "ISIM_TUNE_STORAGE"


class TuneError(IsimError, RuntimeError):
    """The study cannot start or go on (unreachable storage, a study made with other settings)."""


def url_of(tc: TuneCfg) -> str:
    return os.environ.get(ENV) or tc.storage or f"journal:{DEFAULT_JOURNAL}"


def redact(url: str) -> str:
    """The URL without its password, for logs, tags and files."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        if ":" in cred:
            netloc = f"{cred.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{netloc}{slash}{path}"


def is_journal(url: str) -> bool:
    return url.startswith("journal:")


def journal_path(url: str) -> Path:
    return Path(url.removeprefix("journal:"))


def retry_callback(tc: TuneCfg) -> RetryHeartbeatStaleTrialCallback:
    """Queues a dead trial again with its parameters (``retry_history`` names every attempt).
    The rerun resumes from the dead attempt's last round checkpoint, whose summaries hold the
    intermediate values: they are reported again rather than copied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=tc.retries, inherit_intermediate_values=False)


def open_storage(url: str, tc: TuneCfg) -> BaseStorage:
    """The storage, connected and checked: an unreachable URL fails here, before any trial."""
    if is_journal(url):
        path = journal_path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise TuneError(f"tune storage {url}: cannot open the journal file ({e})") from None
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=tc.heartbeat_s,
                              grace_period=3 * tc.heartbeat_s, heartbeat_stale_trial_callback=retry_callback(tc))
    except Exception as e:  # noqa: BLE001 - driver errors vary; the message is what matters
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise TuneError(f"tune storage {redact(url)}: cannot be reached or used ({reason})") from None


@contextmanager
def budget_lock(url: str, storage: BaseStorage, study_name: str) -> Iterator[None]:
    """Held while a worker counts the trials left and asks for one, so N workers (or machines)
    finish exactly ``tune.n_trials``: a file lock for journal and SQLite files, an advisory
    lock for PostgreSQL. Other databases run unlocked (at most one trial per extra worker over)."""
    if is_journal(url) or url.startswith("sqlite:///"):
        from filelock import FileLock
        path = journal_path(url) if is_journal(url) else Path(url.removeprefix("sqlite:///"))
        with FileLock(f"{path}.{study_name}.lock"):
            yield
        return
    if url.startswith("postgresql") and isinstance(storage, RDBStorage):
        from sqlalchemy import text
        key = zlib.crc32(f"isim-tune:{study_name}".encode())
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    yield


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of ``trial``. Optuna keeps it private, yet the storage's own public calls
    (attributes, state, heartbeats) take it: the one place this package reads Optuna internals."""
    return trial._trial_id


def has_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def fail_stale(study: optuna.Study, storage: BaseStorage) -> None:
    """RDB storages: trials whose worker stopped beating are failed and queued again."""
    if has_heartbeat(storage):
        optuna.storages.fail_stale_trials(study)


__all__ = ["TuneError", "url_of", "redact", "open_storage", "budget_lock", "fail_stale", "retry_callback",
           "is_journal", "journal_path", "DEFAULT_JOURNAL"]
