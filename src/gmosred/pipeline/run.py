"""Making a plan's products: a scheduler over products, incremental through a manifest.

Every task's hash (its step, the gmosred version, its sections' parameters that can change bytes,
its output's name, and what identifies each input: a raw file's name, size and mtime, or the hash of
the task that makes it) is known before anything runs. A product whose hash the manifest
(``manifest.json`` in the work folder, keyed by names relative to it) records, and which exists, is up
to date; the others are made, each as soon as the products it needs exist, on one runner for the
whole run. A product whose input failed in this run is not made (its old file is never used), and
the manifest records each product the moment it is written, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import GmosredError
from ..frame.model import remove_stale_temporaries
from ..params import hashed_values
from ..progress import progress
from .config import Config
from .plan import SETUPS, Plan
from .runners import replay, runner
from .steps import STEPS, Task, step_params

log = logging.getLogger("gmosred")
MANIFEST = "manifest.json"


@dataclass
class StepReport:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0  # from the step's first start to its last finish


def _file_id(path: str) -> str:
    p = Path(path)
    st = p.stat()
    return f"{p.name}:{st.st_size}:{st.st_mtime_ns}"


def task_hash(task: Task, cfg: Config, upstream: dict[str, str]) -> str:
    """What a product depends on; ``upstream``: {path of a product of this plan: its task's hash}."""
    step = STEPS[task.step]
    params = {name: hashed_values(value) for name, value in step_params(step, cfg).items()}
    h = hashlib.sha256()
    h.update(f"{task.step}|{__version__}|{json.dumps(params, sort_keys=True)}|{task.output.name}".encode())
    for item in sorted(task.inputs):
        h.update((upstream.get(item) or _file_id(item)).encode())
    for name, cal in sorted(task.calibrations.items()):
        h.update(f"{name}={upstream.get(cal) or _file_id(cal)}".encode())
    h.update(json.dumps([task.skipped, task.missing], sort_keys=True).encode())
    return h.hexdigest()


class RunReport(dict):
    """{step: StepReport} of one run, with the products left stale and why the run stopped, if it did."""

    def __init__(self, steps):
        super().__init__((name, StepReport()) for name in steps)
        self.stale: dict[str, str] = {}  # product name -> why the file on disk is not today's
        self.stopped: str | None = None
        self.not_started = 0  # products left for the next run when the run stopped

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.values())

    def lines(self) -> list[str]:
        """The summary table, then the stale products and why the run stopped."""
        out = [f"{'step':8s} {'made':>5s} {'up to date':>10s} {'failed':>7s} {'time':>8s}"]
        out += [f"{step:8s} {r.done:5d} {r.skipped:10d} {r.failed:7d} {r.seconds:7.1f}s" for step, r in self.items()]
        if self.stale:
            out.append(f"stale: {len(self.stale)} product(s) on disk are from an earlier run and do not match "
                       "their inputs now (not used, not counted as made):")
            out += [f"  {name}: {why}" for name, why in sorted(self.stale.items())]
        if self.stopped:
            out.append(f"stopped: {self.stopped}; {self.not_started} product(s) not started (run again to make them)")
        return out


def _execute(step_name: str, task: Task, params: dict) -> str:
    """One task in a worker: the step's file function (its product noting the steps skipped before it); returns
    the output's path."""
    from ..frame import provenance

    with provenance.skipping(task.skipped):
        return str(STEPS[step_name].run(task, params))


def run_plan(plan: Plan, workdir, cfg: Config, *, jobs: int = 1, dask: str | None = None, force: bool = False,
             show_progress: bool | None = None, workers=None) -> RunReport:
    """Make every product of the plan that is not up to date; returns a report per step. ``workers``:
    a runner started earlier (``runners.runner(..., warm=True)`` before the observing log is built),
    used and closed here; otherwise one is made from ``jobs`` and ``dask``. A full disk (or a folder
    turned read-only) stops the run: the tasks running finish, no new one starts, what is made is kept."""
    workdir = Path(workdir)
    if workdir.is_dir() and (stale := remove_stale_temporaries(workdir)):
        log.info(f"removed {len(stale)} unfinished file(s) left by a killed run")
    manifest_path = workdir / MANIFEST
    manifest = {} if force else _load_manifest(manifest_path)
    report = RunReport(name for name in STEPS if plan.of(name))
    hashes: dict[str, str] = {}  # product path -> hash
    todo: list[Task] = []
    failed: dict[str, str] = {}  # product path -> why it was not made in this run

    def save() -> None:
        try:
            _save_manifest(manifest_path, manifest)
        except GmosredError as e:  # the products made stay; a later run checks and records them
            if not report.stopped:
                report.stopped = str(e)
                log.error(f"{e}: the run stops")

    def fail(task: Task, why: str) -> None:
        failed[str(task.output)] = why
        report[task.step].failed += 1
        if task.output.exists():
            report.stale[task.output.name] = why
        if manifest.pop(_rel(task.output, workdir), None) is not None:
            save()  # never up to date again until remade

    for task in plan.tasks:
        try:
            hashes[str(task.output)] = h = task_hash(task, cfg, hashes)
        except OSError as e:
            why = f"{e.filename or ''} {e.strerror or e}".strip()
            log.warning(f"{task.output.name}: not made: {why}")
            fail(task, why)
            continue
        if manifest.get(_rel(task.output, workdir)) == h and task.output.exists():
            report[task.step].skipped += 1
        else:
            todo.append(task)
    if not todo:
        if workers is not None:
            workers.close(cancel=True)
        return report
    if plan.first_setup is not None:  # the folder's first run: its setup keeps the cookbook's names
        _save_json(workdir / SETUPS, {"first": list(plan.first_setup)}, "record the folder's first setup")
    pending = {str(t.output) for t in todo}
    waiting = list(todo)
    started: dict[str, float] = {}
    run = workers or runner(jobs, dask, tasks=len(todo))
    bar = progress(total=len(todo), desc="run", enabled=show_progress)
    running = 0
    try:
        while (waiting and not report.stopped) or running:
            for task in list(waiting) if not report.stopped else ():
                for kind, cal in list(task.calibrations.items()):
                    if cal in failed and not dict(STEPS[task.step].calibrations).get(kind, True):
                        del task.calibrations[kind]  # an optional calibration that failed: the step goes without
                        task.missing[kind] = f"{Path(cal).name} not made: {failed[cal]}"
                needs = task.needs()
                if any(n in failed for n in needs):
                    waiting.remove(task)
                    bad = next(Path(n).name for n in needs if n in failed)
                    log.warning(f"{task.output.name}: not made: {bad} failed in this run")
                    fail(task, f"{bad} failed in this run")
                    bar.update()
                elif not any(n in pending for n in needs):
                    waiting.remove(task)
                    started.setdefault(task.step, time.perf_counter())
                    run.submit(task, _execute, task.step, task, step_params(STEPS[task.step], cfg))
                    running += 1
            for task, out in run.wait():
                running -= 1
                pending.discard(str(task.output))
                replay(out)
                rep = report[task.step]
                if out.problem:
                    log.warning(f"{out.problem}: {task.output.name} not made")
                    fail(task, out.problem)
                    if out.stop and not report.stopped:
                        report.stopped = out.problem
                        log.error(f"{out.problem}: the run stops (the products made so far are kept; run "
                                  "again to go on)")
                        for queued in run.cancel_pending():
                            running -= 1
                            waiting.append(queued)
                else:
                    manifest[_rel(task.output, workdir)] = hashes[str(task.output)]
                    save()
                    rep.done += 1
                rep.seconds = time.perf_counter() - started[task.step]
                bar.update()
    except BaseException:
        run.close(cancel=True)
        raise
    finally:
        bar.close()
    run.close()
    report.not_started = len(waiting)
    for task in waiting:  # not started: the run stopped
        if task.output.exists():
            report.stale[task.output.name] = "not remade: the run stopped"
    # again at the end, stopped or not: a worker of a killed earlier run may have outlived the cleanup at the start
    # (its parent-death signal is delivered asynchronously) and left its temporary as it died
    remove_stale_temporaries(workdir)
    return report


def _rel(path: Path, workdir: Path) -> str:
    return os.path.relpath(path, workdir)


def _load_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning(f"{path}: unreadable ({e}): every product is remade")
        return {}
    return data if isinstance(data, dict) else {}


def _save_manifest(path: Path, manifest: dict) -> None:
    _save_json(path, manifest, "record the products made")


def _save_json(path: Path, data: dict, what: str) -> None:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.json.tmp")  # as frame.model's
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise GmosredError(f"{path}: cannot {what} ({e.strerror or e})") from None


class logfile:
    """Everything the pipeline reports also goes to ``workdir/gmosred.log`` (a context manager);
    ``record(text)`` files lines that are printed, not logged (the plan, the summary)."""

    def __init__(self, workdir):
        self.path = Path(workdir) / "gmosred.log"

    def __enter__(self):
        try:
            self.handler = logging.FileHandler(self.path)
        except OSError as e:
            raise GmosredError(f"{self.path}: cannot write the run's log ({e.strerror or e})") from None
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self.handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def record(self, text: str) -> None:
        stream = self.handler.stream
        stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO {text}\n")
        stream.flush()

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
        self.handler.close()
