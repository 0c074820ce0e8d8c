"""Where tasks run: in this process, in one pool of worker processes for the whole run, or on dask.

A runner takes ``submit(fn, *args)`` calls and hands back finished results through ``wait()``, as
they finish, so the scheduler can start a task the moment its inputs exist. Worker processes are
forked from this one (the imports and the compiled kernels already loaded come with them), live for
the whole run, and die with it: Linux's parent-death signal, and a check of the parent in each task.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
from dataclasses import dataclass, field
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Callable, Sequence

from ..errors import GmosredError, os_problem
from ..progress import progress

log = logging.getLogger("gmosred")
_PARENT = None


def warm_up() -> None:
    """Load what every task needs (numpy, astropy, scipy, the compiled kernels from numba's cache), so that a
    worker started while the observing log is built is ready when the first task arrives."""
    import astropy.table  # noqa: F401  (what astropy loads on a product's first table: 0.7 s)
    import numpy as np
    from scipy import ndimage  # noqa: F401  (the overscan's)

    from ..engines.combine import CombineParams, combine_arrays
    from ..engines.resample import resample

    a = np.zeros((2, 2), np.float32)
    combine_arrays([a, a, a], CombineParams(threads=1))
    resample(a, a, np.zeros((2, 2), np.uint16), np.array([[1.0, 0, 0.5], [0, 1, 0]]), (2, 2), "linear")


def _die_with_parent(parent: int, warm: bool = False) -> None:
    """Pool initializer: the worker is sent SIGTERM when the process that started it dies."""
    global _PARENT
    _PARENT = parent
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if warm:
        warm_up()


#: Errors after which no later task can succeed: the run stops (a full disk, a quota, a read-only folder).
STOPPING = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@dataclass
class Outcome:
    """What one task gave: its result, or ``problem`` (one line; ``stop``: the run cannot go on), and the
    messages it logged (level, text), handed to this process's log in the order they were made."""

    result: object = None
    problem: str | None = None
    stop: bool = False
    messages: list = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list = []

    def emit(self, record) -> None:
        self.messages.append((record.levelno, record.getMessage()))


def guarded(fn, *args) -> Outcome:
    """Call ``fn(*args)``, catching the problems a user can cause as one line, and collecting what it
    logs (a worker's messages are printed and filed by the run, not glued onto its progress bar)."""
    if _PARENT is not None and os.getppid() != _PARENT:
        os._exit(1)  # orphaned: nobody will read the result
    collect = _Collect()
    handlers, level = log.handlers[:], log.level
    log.handlers[:] = [collect]
    log.setLevel(logging.INFO)
    out = Outcome(messages=collect.messages)
    try:
        out.result = fn(*args)
    except GmosredError as e:
        out.problem = str(e)
    except OSError as e:  # a full disk, a read-only folder, a file gone
        out.problem = os_problem(e)
        out.stop = e.errno in STOPPING
    except MemoryError:
        out.problem = "out of memory"
    finally:
        log.handlers[:] = handlers
        log.setLevel(level)
    return out


def replay(out: Outcome) -> None:
    """Log a task's collected messages here (where the log file and the bar-safe printer are)."""
    for level, text in out.messages:
        log.log(level, text)


class Local:
    """Tasks one after another in this process, each run when its result is waited for."""

    def __init__(self):
        self._queue: list = []

    def submit(self, key, fn, *args) -> None:
        self._queue.append((key, fn, args))

    def wait(self) -> list:
        if not self._queue:
            return []
        key, fn, args = self._queue.pop(0)
        return [(key, guarded(fn, *args))]

    def cancel_pending(self) -> list:
        """Take back the tasks not started; returns their keys."""
        keys, self._queue = [k for k, _, _ in self._queue], []
        return keys

    def close(self, cancel: bool = False) -> None:
        pass


class Pool:
    """One pool of ``jobs`` forked worker processes."""

    def __init__(self, jobs: int, warm: bool = False):
        """``warm``: start the workers now and load the kernels in them (while this process does other work)."""
        import multiprocessing

        self._pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"),
                                         initializer=_die_with_parent, initargs=(os.getpid(), warm))
        self._running: dict[Future, object] = {}
        self._used = False
        if warm:
            for _ in range(jobs):
                self._pool.submit(int)  # starts a worker, which warms up in its initializer

    def submit(self, key, fn, *args) -> None:
        self._used = True
        self._running[self._pool.submit(guarded, fn, *args)] = key

    def wait(self) -> list:
        if not self._running:
            return []
        finished, _ = wait_futures(list(self._running), return_when=FIRST_COMPLETED)
        out = []
        for fut in finished:
            key = self._running.pop(fut)
            try:
                out.append((key, fut.result()))
            except Exception as e:  # a worker killed (out of memory, signal): the task failed
                out.append((key, Outcome(problem=f"worker failed ({type(e).__name__}: {e})")))
        return out

    def cancel_pending(self) -> list:
        keys = [key for fut, key in list(self._running.items()) if fut.cancel()]
        self._running = {fut: key for fut, key in self._running.items() if not fut.cancelled()}
        return keys

    def close(self, cancel: bool = False) -> None:
        if self._pool is None:
            return  # closed already
        cancel = cancel or not self._used  # workers that only warmed up are not waited for
        if cancel:
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.terminate()  # Ctrl-C: stop now, what is written whole stays
        pool, self._pool = self._pool, None
        pool.shutdown(wait=not cancel, cancel_futures=cancel)


class Dask:
    """Tasks on a dask.distributed scheduler (file paths travel, not arrays)."""

    def __init__(self, address: str):
        try:
            from distributed import Client, as_completed
        except ImportError:
            raise GmosredError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
        try:
            self._client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise GmosredError(f"cannot reach the dask scheduler at {address} ({e})") from None
        self._queue = as_completed()
        self._keys: dict = {}

    def submit(self, key, fn, *args) -> None:
        fut = self._client.submit(guarded, fn, *args, pure=False)
        self._keys[fut.key] = key
        self._queue.add(fut)

    def wait(self) -> list:
        if self._queue.is_empty():
            return []
        fut = next(self._queue)
        out = [(self._keys.pop(fut.key), fut.result())]
        out += [(self._keys.pop(f.key), f.result()) for f in self._queue.next_batch(block=False)]
        return out

    def cancel_pending(self) -> list:
        return []  # a dask task may be running anywhere: let each finish

    def close(self, cancel: bool = False) -> None:
        self._client.close()


def runner(jobs: int = 1, dask: str | None = None, tasks: int = 2, warm: bool = False):
    """The runner for a run: dask if an address is given, a pool for several jobs and tasks, else here."""
    if dask:
        return Dask(dask)
    if jobs > 1 and tasks > 1:
        return Pool(jobs, warm)
    return Local()


def run_each(fn: Callable, jobs_args: Sequence[tuple], *, desc: str, failed: str, jobs: int = 1,
             show_progress: bool | None = None) -> tuple[list, dict[str, str]]:
    """``fn(*args)`` for every args tuple (first item: the file it is about), with a progress bar; a
    problem is one line ``<message>: <failed>`` and the others go on. Returns (outputs in order,
    {first item: error})."""
    run = runner(jobs, tasks=len(jobs_args))
    results: dict[int, Outcome] = {}
    bar = progress(total=len(jobs_args), desc=desc, enabled=show_progress)
    try:
        for k, args in enumerate(jobs_args):
            run.submit(k, fn, *args)
        while len(results) < len(jobs_args):
            for k, out in run.wait():
                results[k] = out
                replay(out)
                if out.stop:  # no later file can be made either
                    raise GmosredError(out.problem)
                if out.problem:
                    log.warning(f"{out.problem}: {failed}")
                bar.update()
    finally:
        bar.close()
        run.close(cancel=len(results) < len(jobs_args))
    done = [results[k].result for k in range(len(jobs_args)) if not results[k].problem]
    errors = {str(jobs_args[k][0]): results[k].problem for k in range(len(jobs_args)) if results[k].problem}
    return done, errors
