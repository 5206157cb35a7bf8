"""Where ``crowdprop init`` does its parallel work: in process, in local worker processes, or on Ray.

An engine maps a top-level function over argument tuples and yields the results in
order. Every task depends only on its arguments (randomness comes in as a seeded
``numpy.random.Generator``), so the run directory is the same, byte for byte, whichever
engine made it and however many workers it had.

``local``
    ``workers`` processes on this machine (``concurrent.futures``, ``forkserver``
    start); one worker runs everything in the calling process.
``ray``
    Ray tasks: on the cluster named by ``RAY_ADDRESS`` (its workers need crowdprop
    installed), else on a local Ray started with ``workers`` CPUs. Needs the ``ray`` extra.

At most ``2 * workers`` tasks are in flight, so their arguments and results never pile up;
a single task (a small input) runs in the calling process.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .errors import MissingExtra

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def default_workers() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Engine:
    """In-process engine: ``map`` calls the function in order, here."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def map(self, fn: Callable, items: Iterable[tuple]) -> Iterator:
        for item in items:
            yield fn(*item)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bounded(submit: Callable, collect: Callable, items: Iterable[tuple], depth: int) -> Iterator:
    """Submit ``items`` keeping at most ``depth`` in flight; yield results in order."""
    queue: deque = deque()
    for item in items:
        queue.append(submit(item))
        if len(queue) >= depth:
            yield collect(queue.popleft())
    while queue:
        yield collect(queue.popleft())


class ProcessEngine(Engine):
    """``workers`` local processes."""

    def __init__(self, workers: int):
        super().__init__(workers)
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable, items: Iterable[tuple]) -> Iterator:
        items = iter(items)
        first = next(items, None)
        second = next(items, None) if first is not None else None
        if second is None:  # one task (a small input): no processes to start
            if first is not None:
                yield fn(*first)
            return
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"  # Windows
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method))
        pool = self._pool
        assert first is not None  # second is not None
        yield from _bounded(lambda item: pool.submit(fn, *item), lambda f: f.result(),
                            itertools.chain([first, second], items), 2 * self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayEngine(Engine):
    """Ray tasks (a running cluster from ``RAY_ADDRESS``, else a local one with ``workers`` CPUs)."""

    name = "ray"

    def __init__(self, workers: int):
        super().__init__(workers)
        try:
            import ray
        except ImportError:
            raise MissingExtra("ray", "ray") from None
        self._ray = ray
        self._started = False
        self._remote: dict = {}

    def _init(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            self._started = True
        self.workers = max(self.workers, int(ray.cluster_resources().get("CPU", self.workers)))

    def map(self, fn: Callable, items: Iterable[tuple]) -> Iterator:
        ray = self._ray
        if not ray.is_initialized():
            self._init()
        task = self._remote.get(fn)
        if task is None:
            task = self._remote[fn] = ray.remote(num_cpus=1)(fn)

        def collect(ref):
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the task's own error, as it was raised
                cause = getattr(e, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise

        return _bounded(lambda item: task.remote(*item), collect, items, 2 * self.workers)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


_current: list[Engine] = []


def current() -> Engine:
    """The engine of the innermost :func:`active` block (in process outside any)."""
    return _current[-1] if _current else Engine()


@contextlib.contextmanager
def _pushed(stack: list, item):
    stack.append(item)
    try:
        yield item
    finally:
        stack.pop()


def active(engine: Engine):
    """Make ``engine`` the one that readers and tree builds called without one use (a ``with`` block)."""
    return _pushed(_current, engine)


_timings: list[dict] = []


def timed(timings: dict):
    """Collect the :func:`stage` times of a ``with`` block (where no dict is given) into ``timings``."""
    return _pushed(_timings, timings)


@contextlib.contextmanager
def stage(timings: dict | None, name: str) -> Iterator[None]:
    """Add the wall seconds of the block to ``timings[name]`` (when None, to the dict of
    the innermost :func:`timed` block, if any)."""
    if timings is None and _timings:
        timings = _timings[-1]
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        log.debug("%s: %.2f s", name, time.perf_counter() - t0)


def make_engine(name: str = "local", workers: int | None = None) -> Engine:
    """The engine called ``name`` (:data:`ENGINES`) with ``workers`` (default: this machine's CPUs)."""
    workers = default_workers() if workers is None else int(workers)
    if name == "local":
        return Engine(1) if workers <= 1 else ProcessEngine(workers)
    if name == "ray":
        return RayEngine(workers)
    raise ValueError(f"unknown engine {name!r} (expected one of {', '.join(ENGINES)})")
