"""Executors of a conversion's tasks (:mod:`fastfashion.data.tasks`): ``local`` (a pool of processes on this
machine, the default) and ``ray`` (Ray tasks on a cluster, or on a local Ray). Both run the same functions on the
same arguments, so the output never depends on the engine; results come back in the order of the tasks.

Faults. A worker process that dies (SIGKILL, out of memory) or a node that is lost takes its tasks with it: they
are run again, up to ``retries`` more times each (the local pool is rebuilt; Ray retries the task itself,
``max_retries``), then the run fails with one line naming the tasks. An exception a task raises is not retried: it
is about the data (a bad image is reported, not raised) or a transfer that already used its own retries, and it ends
the run as raised. Ctrl-C or SIGTERM on the driver cancels every task in flight.
"""
from __future__ import annotations

import abc
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import ConfigError, FastfashionError, Terminated, terminated
from ..hardware import available_cpus, bound_to_cpus

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
DEFAULT_RETRIES = 3  # runs of a task after its worker died, beyond the first


class EngineError(FastfashionError, RuntimeError):
    """Tasks failed on every try (their workers kept dying); the message names them."""


def _failed(names: list[str], tries: int, why: str) -> EngineError:
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return EngineError(f"{len(names)} task(s) failed {tries} times ({why}): {shown}")


class Engine(abc.ABC):
    """Runs ``fn(*args)`` for every ``args`` of a list of tasks; see the module docstring."""

    name: str
    slots: int            # tasks that can run at once
    hosts: int = 1        # machines the workers run on (a local output needs a file system they all share)

    @abc.abstractmethod
    def map(self, fn: Callable, tasks: Sequence[tuple], names: Sequence[str],
            done: Callable[[int], None] = lambda i: None) -> list:
        """Results of ``fn(*tasks[i])`` in task order; ``done(i)`` is called as each one finishes."""

    def close(self) -> None:  # noqa: B027 - nothing to release unless the engine says otherwise
        """Release the workers (a pool kept between calls, a Ray started for the run)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: let only the driver handle it (it stops the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalEngine(Engine):
    """A pool of ``workers`` spawned processes (1: every task in this process)."""

    name = "local"

    def __init__(self, workers: int | None = None, retries: int = DEFAULT_RETRIES):
        workers = available_cpus() if workers is None else workers
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.slots, self.retries = bound_to_cpus("workers", workers, "the shard pool"), retries
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn, tasks, names, done=lambda i: None):
        results: list = [None] * len(tasks)
        if self.slots == 1 or len(tasks) <= 1:
            for i, args in enumerate(tasks):
                results[i] = fn(*args)
                done(i)
            return results
        todo, tries = deque(range(len(tasks))), [0] * len(tasks)
        running: dict = {}
        pool, self._pool = self._pool, None  # kept between calls: spawning workers costs ~0.5 s each
        try:
            while todo or running:
                if pool is None:
                    # spawn, not fork: the driver may run threads, which fork does not copy safely
                    pool = ProcessPoolExecutor(self.slots, initializer=_worker_init,
                                               mp_context=multiprocessing.get_context("spawn"))
                while todo and len(running) < 2 * self.slots:
                    i = todo.popleft()
                    running[pool.submit(fn, *tasks[i])] = i
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                lost = []
                for f in finished:
                    i = running.pop(f)
                    try:
                        results[i] = f.result()
                    except BrokenProcessPool:
                        lost.append(i)
                        continue
                    done(i)
                if lost:  # a worker died: every task in flight went down with the pool
                    lost += running.values()
                    running.clear()
                    _stop(pool)
                    pool = None
                    for i in lost:
                        tries[i] += 1
                    dead = [names[i] for i in sorted(lost) if tries[i] > self.retries]
                    if dead:
                        raise _failed(dead, self.retries + 1, "a worker process died")
                    log.warning("a worker process died; running its %d task(s) again", len(lost))
                    todo.extendleft(sorted(lost, reverse=True))
            self._pool, pool = pool, None
            return results
        except BaseException:
            if pool is not None:
                _stop(pool)
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once: queued tasks cancelled, its processes killed."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=5)


class RayEngine(Engine):
    """Ray tasks, one CPU each. ``address``: a cluster's address (default: ``RAY_ADDRESS``, else a running local
    cluster, else a local Ray started for this run, with ``workers`` CPUs, and stopped after it)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = DEFAULT_RETRIES):
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray engine needs Ray: pip install 'fastfashion[ray]'") from None
        self.ray, self.retries, self.started = ray, retries, False
        if not ray.is_initialized():
            # Ray's core worker installs its own SIGTERM handler (it prints a stack and exits): keep the caller's,
            # so that SIGTERM cancels the tasks and ends the run like Ctrl-C
            handler = signal.getsignal(signal.SIGTERM)
            try:
                self._init(address or os.environ.get("RAY_ADDRESS"), workers)
            finally:
                if threading.current_thread() is threading.main_thread() and handler is not None:
                    signal.signal(signal.SIGTERM, handler)
        alive = [n for n in ray.nodes() if n.get("Alive")]
        self.hosts = len({n.get("NodeManagerAddress") for n in alive}) or 1
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        log.info("Ray: %d CPUs on %d node(s), %d host(s)%s", self.slots, len(alive), self.hosts,
                 " (started for this run)" if self.started else "")

    def _init(self, address: str | None, workers: int | None) -> None:
        ray, quiet = self.ray, {"logging_level": logging.WARNING, "log_to_driver": True}
        if address:
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, ValueError) as e:
                raise ConfigError(f"cannot reach the Ray cluster at {address}: {e}") from None
            return
        try:
            ray.init(address="auto", **quiet)  # a cluster already running on this machine
        except ConnectionError:
            if workers is not None:
                workers = bound_to_cpus("workers", workers, "a local Ray's CPUs")
            ray.init(num_cpus=workers, include_dashboard=False, **quiet)
            self.started = True

    def map(self, fn, tasks, names, done=lambda i: None):
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(fn)
        results: list = [None] * len(tasks)
        todo, running, failed = deque(range(len(tasks))), {}, []
        try:
            while todo or running:
                while todo and len(running) < 2 * self.slots:
                    i = todo.popleft()
                    running[remote.remote(*tasks[i])] = i
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    i = running.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the task raised: about the data, not retried
                        cause = e.cause if isinstance(e.cause, BaseException) else e
                        raise cause from None
                    except ray.exceptions.RayError as e:  # its worker or node died on every try
                        log.warning("task %s failed: %s", names[i], str(e).splitlines()[0])
                        failed.append(names[i])
                        continue
                    done(i)
        except BaseException as e:
            for ref in running:
                ray.cancel(ref)  # a KeyboardInterrupt in the task (force=True trips a check in Ray 2.60's core worker)
            try:  # let the cancellations complete before this process goes on to exit
                ray.wait(list(running), num_returns=len(running), timeout=5)
            except BaseException:  # noqa: BLE001 - a second signal: stop waiting
                pass
            if isinstance(e, KeyboardInterrupt) and not isinstance(e, Terminated) and terminated():
                # Ray turns any exception a signal handler raised inside ray.wait into a plain KeyboardInterrupt
                raise Terminated("signal 15") from None
            raise
        if failed:
            raise _failed(failed, self.retries + 1, "its worker or node died")
        return results

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def make_engine(name: str, *, workers: int | None = None, ray_address: str | None = None) -> Engine:
    if name == "local":
        return LocalEngine(workers)
    if name == "ray":
        return RayEngine(ray_address, workers)
    raise ConfigError(f"engine {name!r}: expected one of {', '.join(ENGINES)}")
