"""The cookbook as a plan: from the observing log to master calibrations, reduced and mosaicked frames.

``make_plan`` groups the frames of the log (use_me=1) by setup (instrument, detector, binning, ROI,
read speed, gain setting) and filter, associates each science group with the master bias of its
setup and the master flat of its setup and filter, and says what is missing and what would satisfy
it. ``run_plan`` makes the products step by step (bias, flat, reduce, mosaic), skipping those whose
inputs and parameters have not changed (a manifest in the work folder records a hash of each), in
parallel processes or on a dask cluster. Products are written whole or not at all, so a run killed
at any moment and started again finishes with the same outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, obslog
from .config import Config
from .errors import GmosredError
from .frame import remove_stale_temporaries, stem

log = logging.getLogger("gmosred")
STEPS = ("bias", "flat", "reduce", "mosaic")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Setup:
    instrument: str
    detid: str
    xbin: int
    ybin: int
    roi: str
    read_speed: str
    gain_setting: str

    def describe(self) -> str:
        return (f"{self.instrument} {self.xbin}x{self.ybin} {self.roi}, {self.read_speed} read/{self.gain_setting} gain"
                f" ({self.detid})")

    def tag(self) -> str:
        return f"{self.instrument}_{self.xbin}x{self.ybin}_{self.roi.replace(' ', '')}_{self.read_speed}-{self.gain_setting}"


@dataclass
class Task:
    step: str
    output: Path
    inputs: list[str]
    calibrations: dict = field(default_factory=dict)  # name -> Task output it needs
    label: str = ""


@dataclass
class Plan:
    tasks: dict[str, list[Task]]
    problems: list[str]
    setups: dict

    def describe(self) -> str:
        lines = []
        for step in STEPS:
            for t in self.tasks[step]:
                if step in ("bias", "flat"):
                    lines.append(f"{step:6s} {t.output.name:34s} from {len(t.inputs)} frame(s): "
                                 f"{', '.join(stem(i) for i in t.inputs[:6])}{' ...' if len(t.inputs) > 6 else ''}")
            if step == "reduce" and self.tasks[step]:
                groups: dict = {}
                for t in self.tasks[step]:
                    key = (t.label, Path(t.calibrations.get("bias", "")).name, Path(t.calibrations.get("flat", "")).name)
                    groups.setdefault(key, []).append(t)
                for (label, bias, flat), ts in groups.items():
                    lines.append(f"reduce {len(ts):3d} frame(s) {label}: bias {bias or 'none'}, flat {flat or 'none'}")
            if step == "mosaic" and self.tasks[step]:
                lines.append(f"mosaic {len(self.tasks[step]):3d} frame(s) -> mrg*.fits")
        lines += [f"missing: {p}" for p in self.problems]
        return "\n".join(lines)


def _setup(row) -> Setup:
    return Setup(row["Instrument"], row["DetID"], row["XBin"], row["YBin"], row["RoIName"] or row["RoI"],
                 row["ReadSpeed"] or "?", row["GainSetting"] or "?")


def _band(filter2: str) -> str:
    return filter2.split("_")[0]


def make_plan(db, workdir, cfg: Config) -> Plan:
    """The tasks for every usable group of frames in the observing log, and what is missing."""
    from . import select

    workdir = Path(workdir)
    con = obslog.connect(db)
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM obslog WHERE use_me=1 ORDER BY File")]
    finally:
        con.close()
    by_file = {r["File"]: r for r in rows}
    s = cfg.select
    picked = {
        "bias": {r["File"] for r in select.select(db, "bias", DateObs=s.bias_dates or None)},
        "flat": {r["File"] for r in select.select(db, "twiFlat", DateObs=s.flat_dates or None)},
        "sci": {r["File"] for r in select.select(db, "sciImg", Object=s.objects, DateObs=s.science_dates or None)},
    }
    groups: dict = {}
    for kind, files in picked.items():
        for f in sorted(files):
            r = by_file[f]
            key = (kind, _setup(r)) if kind == "bias" else (kind, _setup(r), _band(r["Filter2"]))
            groups.setdefault(key, []).append(r["Path"])
    setups = sorted({k[1] for k in groups}, key=lambda x: x.tag())
    several = len(setups) > 1
    tasks: dict[str, list[Task]] = {step: [] for step in STEPS}
    problems = []
    bias_out = {}
    for key, paths in groups.items():
        if key[0] == "bias":
            out = workdir / (f"MCbias_{key[1].tag()}.fits" if several else "MCbias.fits")
            tasks["bias"].append(Task("bias", out, paths, label=key[1].describe()))
            bias_out[key[1]] = out
    flat_out = {}
    for key, paths in groups.items():
        if key[0] == "flat":
            setup, band = key[1], key[2]
            out = workdir / (f"MCflat_{band}_{setup.tag()}.fits" if several else f"MCflat_{band}.fits")
            cal = {"bias": str(bias_out[setup])} if setup in bias_out else {}
            if setup not in bias_out:
                problems.append(f"no biases for the {band} flats of {setup.describe()}: they are made without a bias")
            tasks["flat"].append(Task("flat", out, paths, cal, label=f"{band}, {setup.describe()}"))
            flat_out[(setup, band)] = out
    prefix = cfg.reduce.prefix
    for key, paths in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if key[0] != "sci":
            continue
        setup, band = key[1], key[2]
        if setup not in bias_out:
            problems.append(f"{len(paths)} {band} science frame(s) of {setup.describe()} have no biases: add BIAS "
                            f"frames of that instrument, binning, ROI and read mode; not reduced")
            continue
        if (setup, band) not in flat_out:
            problems.append(f"{len(paths)} {band} science frame(s) of {setup.describe()} have no twilight flats in "
                            f"{band}: add them (OBJECT Twilight, OBSCLASS dayCal); not reduced")
            continue
        cal = {"bias": str(bias_out[setup]), "flat": str(flat_out[(setup, band)])}
        for p in paths:
            rg = workdir / f"{prefix}{stem(p)}.fits"
            tasks["reduce"].append(Task("reduce", rg, [p], cal, label=f"{band}, {setup.describe()}"))
            tasks["mosaic"].append(Task("mosaic", workdir / f"m{rg.name}", [str(rg)]))
    return Plan(tasks, problems, {s.tag(): s for s in setups})


# ------------------------------------------------------------------ running
def _file_id(path: str, known: dict) -> str:
    """What identifies an input's content: the hash of a product we made, or size and mtime."""
    if path in known:
        return known[path]
    p = Path(path)
    st = p.stat()
    return f"{p.name}:{st.st_size}:{st.st_mtime_ns}"


def task_hash(task: Task, params: str, known: dict) -> str:
    h = hashlib.sha256()
    h.update(f"{task.step}|{__version__}|{params}|{task.output.name}".encode())
    for item in sorted(task.inputs):
        h.update(_file_id(item, known).encode())
    for name, cal in sorted(task.calibrations.items()):
        h.update(f"{name}={_file_id(cal, known)}".encode())
    return h.hexdigest()


@dataclass
class StepReport:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0


def _do_bias(out, inputs, cfg):
    from .calibrate.bias import make_master_bias

    return make_master_bias(inputs, out, cfg.bias_params())


def _do_flat(out, inputs, bias, cfg):
    from .calibrate.flat import make_master_flat

    return make_master_flat(inputs, out, bias=bias, params=cfg.flat_params())


def _do_reduce(out, inputs, bias, flat, cfg):
    from .calibrate.reduce import _reduce_cached

    return _reduce_cached(inputs[0], Path(out).parent, bias, flat, cfg.reduce_params())


def _do_mosaic(out, inputs, cfg):
    from .mosaic import mosaic_file

    return mosaic_file(inputs[0], Path(out).parent, cfg.mosaic.interpolant, cfg.mosaic.tile)


def _job(step: str, task: Task, cfg: Config) -> tuple:
    """The step function and its arguments (the output first) for one task."""
    if step == "bias":
        return _do_bias, (str(task.output), task.inputs, cfg)
    if step == "flat":
        return _do_flat, (str(task.output), task.inputs, task.calibrations.get("bias"), cfg)
    if step == "reduce":
        return _do_reduce, (str(task.output), task.inputs, task.calibrations["bias"], task.calibrations["flat"], cfg)
    return _do_mosaic, (str(task.output), task.inputs, cfg)


def run_plan(plan: Plan, workdir, cfg: Config, *, jobs: int = 1, dask: str | None = None, force: bool = False,
             show_progress: bool | None = None) -> dict[str, StepReport]:
    """Make every product of the plan that is not up to date; returns a report per step."""
    from .batch import run_each

    workdir = Path(workdir)
    if workdir.is_dir() and (stale := remove_stale_temporaries(workdir)):
        log.info(f"removed {len(stale)} unfinished file(s) left by a killed run")
    manifest_path = workdir / MANIFEST
    manifest = {} if force or not manifest_path.exists() else json.loads(manifest_path.read_text())
    made: dict[str, str] = {}  # product path -> its hash, for the tasks that depend on it
    reports = {}
    client = _dask_client(dask) if dask else None
    try:
        for step in STEPS:
            rep = StepReport()
            t0 = time.perf_counter()
            params = repr(_step_params(step, cfg))
            todo = []
            for task in plan.tasks[step]:
                if any(c not in made and not Path(c).exists() for c in task.calibrations.values()) or \
                        any(i not in made and not Path(i).exists() for i in task.inputs):
                    rep.failed += 1  # its calibration or input could not be made
                    log.warning(f"{task.output.name}: not made, an input or calibration is missing")
                    continue
                h = task_hash(task, params, made)
                if manifest.get(str(task.output)) == h and task.output.exists():
                    made[str(task.output)] = h
                    rep.skipped += 1
                else:
                    todo.append((task, h))
            if todo:
                hashes = {str(t.output): h for t, h in todo}

                def record(out):  # as each product is finished: a killed run keeps what it made
                    made[str(out)] = manifest[str(out)] = hashes[str(out)]
                    _save_manifest(manifest_path, manifest)
                fn = _job(step, todo[0][0], cfg)[0]
                done, errors = run_each(fn, [_job(step, t, cfg)[1] for t, _ in todo], desc=step, failed="not made",
                                        jobs=jobs, client=client, on_done=record, show_progress=show_progress)
                rep.done, rep.failed = rep.done + len(done), rep.failed + len(errors)
            rep.seconds = time.perf_counter() - t0
            reports[step] = rep
    finally:
        if client is not None:
            client.close()
    return reports


def _step_params(step: str, cfg: Config):
    return {"bias": cfg.bias_params(), "flat": cfg.flat_params(), "reduce": cfg.reduce_params(),
            "mosaic": cfg.mosaic}[step]


def _save_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.replace(path)


def _dask_client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise GmosredError("--dask needs dask.distributed: pip install 'dask[distributed]'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise GmosredError(f"cannot reach the dask scheduler at {address} ({e})") from None


def prepare(rawdir, workdir, cfg: Config, *, jobs: int = 1, show_progress: bool | None = None) -> Plan:
    """Index ``rawdir`` into its observing log (in the work folder if the raw folder is read-only) and plan."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db = obslog.default_db(rawdir) if _writable(rawdir) else workdir / obslog.DEFAULT_DB
    summary = obslog.build(rawdir, db, jobs=jobs, show_progress=show_progress)
    for name, reason in sorted(summary.rejected.items()):
        log.warning(f"{Path(rawdir) / name}: {reason}: not used")
    plan = make_plan(db, workdir, cfg)
    for problem in plan.problems:
        log.warning(problem)
    return plan


@contextmanager
def logfile(workdir):
    """Everything the pipeline reports also goes to ``workdir/gmosred.log``."""
    handler = logging.FileHandler(Path(workdir) / "gmosred.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def _writable(folder) -> bool:
    import os

    return os.access(folder, os.W_OK)
