"""The cookbook as a plan: from the observing log to the tasks of every step in the step table.

``make_plan`` takes the frames of the log (use_me=1) kind by kind (the recipes: biases, twilight
flats, science frames), groups them by the calibration-match criteria of their first step (a master
per group), gives every task the calibrations whose criteria and validity window fit it, and chains
each recipe's later steps on the products of the earlier ones. What is missing is said with what
would satisfy it, and the other groups go on.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import GmosredError
from ..frame.model import stem
from ..obslog import index as obslog
from ..obslog import match
from .config import Config
from .steps import DATES, RECIPES, STEPS, Task, step_params

log = logging.getLogger("gmosred")


@dataclass(frozen=True)
class Group:
    """Frames that share a calibration's criteria (one master is made from them)."""

    kind: str  # calibration-match row
    key: tuple
    tag: str  # '' for the work folder's first setup, '_<setup>' for any other (see ``SETUPS``)
    band: str

    def describe(self) -> str:
        return match.describe(self.kind, self.key)


#: The work folder's record of its first setup: the masters of that setup have the cookbook's names
#: (MCbias.fits, MCflat_r.fits), those of every other setup carry it (MCbias_GMOS-S_EEV2037-06-03_2x2_
#: FullFrame_slow-low.fits). The first setup is the one of the earliest science frame (of any frame if
#: there is none) when the folder's first run starts, and it stays: frames of other setups added or
#: removed later never rename (or remake) a product.
SETUPS = "setups.json"


@dataclass
class Plan:
    tasks: list[Task]
    problems: list[str] = field(default_factory=list)
    first_setup: tuple | None = None  # to record in SETUPS when the run starts (None: recorded already)

    def of(self, step: str) -> list[Task]:
        return [t for t in self.tasks if t.step == step]

    def describe(self) -> str:
        """What will be made, step by step (``--dry-run``)."""
        lines = []
        for name, step in STEPS.items():
            tasks = self.of(name)
            if not tasks:
                continue
            if step.per == "group":
                for t in tasks:
                    names = ", ".join(stem(i) for i in t.inputs[:6])
                    cals = "".join(f", {k} {Path(v).name}" for k, v in t.calibrations.items() if v)
                    lines.append(f"{name:7s}{t.output.name:34s} from {len(t.inputs)} frame(s){cals}: {names}"
                                 f"{' ...' if len(t.inputs) > 6 else ''}")
                continue
            groups: dict = {}
            for t in tasks:
                cals = ", ".join(f"{k} {Path(v).name}" for k, v in t.calibrations.items())
                groups.setdefault((t.label, cals), []).append(t)
            for (label, cals), ts in groups.items():
                lines.append(f"{name:7s}{len(ts):3d} frame(s) {label}{': ' + cals if cals else ''} "
                             f"-> {ts[0].output.name}{' ...' if len(ts) > 1 else ''}")
        lines += [f"missing: {p}" for p in self.problems]
        return "\n".join(lines)


def _when(row) -> datetime | None:
    try:
        return datetime.fromisoformat(str(row["DateTime"]))
    except (KeyError, TypeError, ValueError):
        return None


def _tag(key: tuple, kind: str) -> str:
    """The setup part of a master's name: '_GMOS-S_EEV2037-06-03_4x4_FullFrame_slow-low' (the criteria
    values, the detector set named by its first CCD)."""
    from .. import instruments

    values = match.values(kind, key)
    try:
        detector = instruments.detector_set(values["detector"]).ccd_names[0]
    except (KeyError, instruments.UnknownInstrumentError):
        detector = str(values.get("detector", "?"))[:16]
    binning = str(values.get("binning", "?")).replace(" ", "x")
    roi = str(values.get("roi", "?")).replace(" ", "")
    return (f"_{values.get('instrument')}_{detector.replace(' ', '')}_{binning}_{roi}_"
            f"{values.get('read_speed')}-{values.get('gain_setting')}")


def recorded_setup(workdir) -> tuple | None:
    """The work folder's first setup as recorded (``SETUPS``), or None."""
    try:
        return tuple(json.loads((Path(workdir) / SETUPS).read_text())["first"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_plan(db, workdir, cfg: Config) -> Plan:
    """The tasks for every usable group of frames in the observing log, and what is missing."""
    from ..obslog import select

    workdir = Path(workdir)
    con = obslog.connect(db, write=False)
    try:
        rows = {r["File"]: dict(r) for r in con.execute("SELECT * FROM obslog WHERE use_me=1 ORDER BY File")}
    finally:
        con.close()
    s = cfg.select
    chosen = {}
    for kind in RECIPES:
        criteria = {"DateObs": getattr(s, DATES[kind]) or None}
        if kind == "sciImg":
            criteria["Object"] = s.objects
        chosen[kind] = [rows[r["File"]] for r in select.select(db, kind, **criteria) if r["File"] in rows]
    plan = Plan([])
    first = recorded_setup(workdir)
    if first is None:
        frames = chosen["sciImg"] or [r for frames in chosen.values() for r in frames]
        if frames:
            first = plan.first_setup = match.log_key(min(frames, key=lambda r: (str(r["DateTime"]), r["File"])),
                                                     "bias")
    made: dict[str, list[tuple[Group, Task, datetime | None]]] = {}  # step -> its masters
    for kind, recipe in RECIPES.items():
        _plan_recipe(plan, chosen[kind], recipe, made, workdir, cfg, first)
    return plan


def _plan_recipe(plan: Plan, frames: list[dict], recipe, made, workdir, cfg, first_setup: tuple | None) -> None:
    """The tasks of one recipe: a master per group (a first step per group), or a chain per frame, in which a group
    step makes a master of the chains' products so far for a later step (a fringe frame) and a step that does not
    apply to a frame is left out of its chain and noted in the product of its next step (SKIPPED)."""
    first = STEPS[recipe[0]]
    if first.per == "group":
        _plan_group(plan, first, [(r, r["Path"]) for r in frames], made, workdir, cfg, first_setup)
        return
    until = cfg["run"].until
    steps = recipe[:recipe.index(until) + 1] if until in recipe else recipe
    params = step_params(first, cfg)
    lacking: dict = {}  # (why, setup, band) -> frames that cannot be made for that reason
    chains = []  # (row, its last task, {step skipped since: why})
    for r in frames:
        chain = Task(first.name, workdir / first.output(r["Path"], params), [r["Path"]],
                     label=f"{match.band(r['Filter2'])}, {_setup_text(match.log_key(r, 'bias'))}")
        missing = [why for _, why, required in _calibrate(chain, first, r, made) if required]
        if missing:
            lacking.setdefault((missing[0], match.log_key(r, "bias"), match.band(r["Filter2"])), []).append(r)
            continue
        plan.tasks.append(chain)
        chains.append((r, chain, {}))
    for (why, setup, band), rows in lacking.items():
        plan.problems.append(f"{len(rows)} {band} science frame(s) of {_setup_text(setup)} {why}; not reduced")
    for name in steps[1:]:
        step = STEPS[name]
        params = step_params(step, cfg)
        if step.per == "group":
            _plan_group(plan, step, [(r, str(c.output)) for r, c, _ in chains if step.applies(r, params) is None],
                        made, workdir, cfg, first_setup)
            continue
        going, chains, without = chains, [], {}
        for r, chain, skipped in going:
            why = step.applies(r, params)
            if why is not None:  # the frame goes on to the next step without this one
                chains.append((r, chain, {**skipped, name: why}))
                continue
            task = Task(name, workdir / step.output(chain.output, params), [str(chain.output)], label=chain.label,
                        skipped=skipped)
            given = step.given(r, params)
            if given:
                task.calibrations[step.calibrations[0][0]] = given
            else:
                for cal, why, _ in _calibrate(task, step, r, made):  # required ones are made in the recipe
                    task.missing[cal] = why
                    without.setdefault((why, match.log_key(r, "bias"), match.band(r["Filter2"])), []).append(r)
            plan.tasks.append(task)
            chains.append((r, task, {}))
        for (why, setup, band), rows in without.items():
            plan.problems.append(f"{len(rows)} {band} science frame(s) of {_setup_text(setup)} {why}; {name} "
                                 "passes them on unchanged")


def _plan_group(plan: Plan, step, members: list[tuple[dict, str]], made, workdir, cfg, first_setup) -> None:
    """One task of a group step per group of ``members`` ((observing-log row, input path)) that share the step's
    match criteria; the tasks become calibrations of later steps (``made``)."""
    params = step_params(step, cfg)
    groups: dict = {}
    for r, path in members:
        groups.setdefault(match.log_key(r, step.match), []).append((r, path))
    for key, group_members in groups.items():
        rows = [r for r, _ in group_members]
        setup = match.log_key(rows[0], "bias")
        group = Group(step.match, key, "" if setup == first_setup else _tag(setup, "bias"), match.band(rows[0]["Filter2"]))
        times = sorted(t for t in map(_when, rows) if t is not None)
        task = Task(step.name, workdir / step.output(group, params), [p for _, p in group_members],
                    label=group.describe())
        missing = _calibrate(task, step, rows[0], made)
        for _, why, required in missing:
            plan.problems.append(f"the {group.band} {step.name}s of {_setup_text(setup)} {why}"
                                 f"{'; not made' if required else '; made without it'}")
        if not any(required for *_, required in missing):
            plan.tasks.append(task)
            made.setdefault(step.name, []).append((group, task, times[len(times) // 2] if times else None))


def _setup_text(key: tuple) -> str:
    v = match.values("bias", key)
    return (f"{v['instrument']} {str(v['binning']).replace(' ', 'x')} {v['roi']}, {v['read_speed']} read/"
            f"{v['gain_setting']} gain ({v['detector']})")


def _calibrate(task: Task, step, row: dict, made) -> list[tuple[str, str, bool]]:
    """Give ``task`` the masters that fit its frame (criteria and validity window, the nearest in time);
    returns what is missing: (calibration, why, required)."""
    when = _when(row)
    missing = []
    for cal_step, required in step.calibrations:
        kind = STEPS[cal_step].match
        key = match.log_key(row, kind)
        window = match.calibration(kind).max_days
        same = [(t, d) for g, t, d in made.get(cal_step, []) if g.key == key]
        near = sorted(((abs((when - d).total_seconds()) / 86400 if when and d else 0.0), t) for t, d in same)
        if near and (window is None or near[0][0] <= window):
            task.calibrations[cal_step] = str(near[0][1].output)
            continue
        band = match.band(row.get("Filter2"))
        why = STEPS[cal_step].missing.format(band=band)
        if near:
            why = (f"have no {cal_step} within {window:g} days (the nearest, {near[0][1].output.name}, is "
                   f"{near[0][0]:.0f} days away)")
        missing.append((cal_step, why, required))
    return missing


def prepare(rawdir, workdir, cfg: Config, *, jobs: int = 1, show_progress: bool | None = None,
            dry_run: bool = False) -> Plan:
    """Index ``rawdir`` into its observing log (in the work folder if the raw folder is read-only) and plan.
    ``dry_run``: write nothing anywhere (the log is brought up to date in a temporary copy)."""
    import contextlib
    import shutil
    import tempfile

    workdir = Path(workdir)
    if not Path(rawdir).is_dir():
        raise GmosredError(f"{rawdir}: no such folder")
    db = obslog.default_db(rawdir)
    if not os.access(rawdir, os.W_OK) or not os.access(db, os.W_OK) and db.exists():
        db = workdir / obslog.DEFAULT_DB
    with tempfile.TemporaryDirectory(prefix="gmosred-") if dry_run else contextlib.nullcontext() as scratch:
        if dry_run:
            copy = Path(scratch) / obslog.DEFAULT_DB
            for kept in (db, obslog.default_db(rawdir)):
                if kept.exists():
                    shutil.copyfile(kept, copy)  # the use_me choices come along
                    break
            db = copy
        summary = obslog.build(rawdir, db, jobs=jobs, show_progress=show_progress)
        for name, reason in sorted(summary.rejected.items()):
            log.warning(f"{Path(rawdir) / name}: {reason}: not used")
        plan = make_plan(db, workdir, cfg)
    for problem in plan.problems:
        log.warning(problem)
    return plan
