"""Parallel work, in one place: the worker-count rule of each backend and the one thread pool.

``-j/--workers N`` is the number of images decoded beside the main work; 0 decodes them in the
main thread, one at a time. Given, it is used as is; left out (None), each backend's rule picks
it from the CPU count:

- scoring with PyTorch (``predict``, ``explain``, ``evaluate``, training's validation):
  DataLoader worker *processes*, :func:`scoring_workers`;
- scoring with ONNX Runtime: decoding *threads* (:func:`parallel_map`), the same rule;
- ``prepare``: decoding *threads*, :func:`prepare_workers`;
- ``train``: DataLoader worker *processes*, :func:`train_workers`.

Under torchrun the processes of one node share its cores (:func:`per_process`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

WINDOW = 4  # results computed ahead, per worker: memory stays flat however many items


def per_process(default: int, processes: int = 1) -> int:
    """A per-process share of ``default`` workers when ``processes`` share the node's cores."""
    return max(1, default // processes) if processes > 1 else default


def scoring_workers(workers: int | None = None, processes: int = 1) -> int:
    """Decoding workers when scoring, PyTorch (processes) and ONNX Runtime (threads) alike:
    ``workers`` when given, else the cores the network does not need, at most 4 and at least 1
    (min(4, cores − 1)), shared by the ``processes`` of a torchrun node."""
    if workers is not None:
        return workers
    return per_process(max(1, min(4, (os.cpu_count() or 2) - 1)), processes)


def prepare_workers(workers: int | None = None) -> int:
    """Decoding threads of ``prepare``: ``workers`` when given, else min(4, cores) (its main
    thread only waits)."""
    return min(4, os.cpu_count() or 1) if workers is None else workers


def train_workers(workers: int | None = None, processes: int = 1) -> int:
    """DataLoader worker processes of ``train``: ``workers`` when given, else the cores besides
    the main process, at most 8 (``processes`` training processes on the node share its
    cores)."""
    if workers is not None:
        return workers
    return max(1, min(8, (os.cpu_count() or 2) // processes - 1))


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    progress: Callable[[int], None] | None = None,
) -> Iterator[R]:
    """``map(fn, items)`` computed by ``workers`` threads (0: in this thread), in order, with at
    most :data:`WINDOW` results per worker computed ahead. For work that releases the GIL
    (Pillow, zlib, hashlib, ONNX Runtime). ``progress(done)`` after each result. An exception
    (or an interrupt) cancels the work not yet started and is raised here."""
    for done, result in enumerate(_in_order(fn, items, workers), 1):
        if progress:
            progress(done)
        yield result


def _in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= WINDOW * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
