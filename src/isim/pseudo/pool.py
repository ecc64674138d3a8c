"""A pool of worker processes for the per-image CPU work after CAM inference (thresholds,
dense CRF, PNG writing, scoring against ground truth).

CAMs come from the GPU (or the main process) one image at a time; at most ``2 x workers``
images are in flight, so memory does not grow with the dataset. The work is a picklable
callable (a dataclass holding its fixed settings: CRF, output folder, thresholds), handed to
each worker once by the pool's initializer rather than pickled with every image.
"""
from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_task: Callable[..., Any] | None = None  # this worker process's task, set by its initializer


def _init(task: Callable[..., Any]) -> None:
    global _task
    _task = task


def _call(*job: Any) -> Any:
    assert _task is not None, "pool worker started without its task"
    return _task(*job)


def forks() -> bool:
    """Whether workers start by fork: they then share the parent's memory (a model, say) for free."""
    return "fork" in mp.get_all_start_methods()


def imap(task: Callable[..., Any], jobs: Iterable[tuple], workers: int) -> Iterator[Any]:
    """``task(*job)`` for every job, results in order; in this process when ``workers`` is 0."""
    if workers <= 0:
        for job in jobs:
            yield task(*job)
        return
    # fork: cheap, nothing re-imported, and a task holding a model is shared, not pickled
    ctx = mp.get_context("fork" if forks() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(task,))
    inflight: deque[Future] = deque()
    try:
        for job in jobs:
            inflight.append(pool.submit(_call, *job))
            while len(inflight) >= 2 * workers:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
