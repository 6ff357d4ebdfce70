"""Ordered parallel map over worker processes, for dataset generation and import."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures


@contextlib.contextmanager
def ordered_map(fn: Callable, items: Iterable, *, num_workers: int, chunksize: int = 1) -> Iterator[Iterator]:
    """Yields an iterator of fn(item) in item order, computed by `num_workers` processes
    (in this process when num_workers <= 1). Workers are spawned, not forked: forking a
    process that runs JAX or other threads can deadlock."""
    if num_workers <= 1:
        yield map(fn, items)
        return
    with futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool.map(fn, items, chunksize=chunksize)
