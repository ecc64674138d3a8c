"""A pool of worker processes for the per-image CPU work after CAM inference (thresholds,
dense CRF, PNG writing, scoring against ground truth).

CAMs come from the GPU (or the main process) one image at a time; at most ``2 x workers``
images are in flight, so memory does not grow with the dataset. Worker functions read their
fixed settings from :data:`STATE`, set once per worker rather than pickled with every image.
"""
from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

STATE: dict[str, Any] = {}


def _init(state: dict[str, Any]) -> None:
    STATE.clear()
    STATE.update(state)


def imap(finish: Callable[..., Any], jobs: Iterable[tuple], state: dict[str, Any], workers: int) -> Iterator[Any]:
    """``finish(*job)`` for every job, results in order; in this process when ``workers`` is 0."""
    if workers <= 0:
        _init(state)
        for job in jobs:
            yield finish(*job)
        return
    # workers only run numpy + pydensecrf, so fork (cheap, nothing re-imported) is safe
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(state,))
    inflight: deque[Future] = deque()
    try:
        for job in jobs:
            inflight.append(pool.submit(finish, *job))
            while len(inflight) >= 2 * workers:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
