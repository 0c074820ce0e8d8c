"""One step over many files: in parallel processes, with a progress bar, one line per failure."""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from .errors import GmosredError
from .progress import progress

log = logging.getLogger("gmosred")


def _guarded(job):
    step, args = job
    try:
        return args[0], step(*args), None
    except GmosredError as e:
        return args[0], None, str(e)


def run_each(step: Callable[..., Path], jobs_args: Sequence[tuple], *, desc: str, failed: str, jobs: int = 1,
             client=None, on_done: Callable[[Path], None] | None = None,
             show_progress: bool | None = None) -> tuple[list[Path], dict[str, str]]:
    """Call ``step(*args)`` for every args tuple (first item: the file it is about), in ``jobs``
    processes or on a dask ``client``; a GmosredError is reported as ``<message>: <failed>`` and the
    others go on. ``on_done(output)`` is called as each one finishes. Returns (outputs in order,
    {first item: error})."""
    work = [(step, args) for args in jobs_args]
    done, errors = [], {}
    bar = progress(total=len(work), desc=desc, enabled=show_progress)
    pool = ProcessPoolExecutor(jobs) if client is None and jobs > 1 and len(work) > 1 else None
    if client is not None:
        results = client.gather(client.map(_guarded, work, pure=False)) if work else []
    else:
        results = pool.map(_guarded, work) if pool else map(_guarded, work)
    try:
        for path, out, err in results:
            if err:
                log.warning(f"{err}: {failed}")
                errors[str(path)] = err
            else:
                done.append(out)
                if on_done is not None:
                    on_done(out)
            bar.update()
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    return done, errors
