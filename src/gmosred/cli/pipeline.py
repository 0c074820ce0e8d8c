"""The pipeline: ``gmosred run``, ``gmosred config``, ``gmosred demo``."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from .. import pipeline
    from ..frame.model import writable_folder
    from ..pipeline import config
    from ..pipeline.runners import runner

    overrides = config.parse_set(args.set)
    for key in ("refcat", "photcat"):  # files: made absolute, as the workers may run elsewhere
        if getattr(args, key, None):
            overrides.setdefault("measure", {})[key] = str(Path(getattr(args, key)).resolve())
    if getattr(args, "fringe", None):
        overrides.setdefault("fringe", {})["frame"] = str(Path(args.fringe).resolve())
    if getattr(args, "until", None):
        overrides.setdefault("run", {})["until"] = args.until
    cfg = config.load(args.config, overrides)
    if args.dry_run:  # writes nothing: the observing log is brought up to date in a temporary copy
        plan = pipeline.prepare(args.rawdir, args.workdir, cfg, jobs=args.jobs, dry_run=True)
        print(plan.describe())
        return 0
    writable_folder(args.workdir, "give another --workdir")
    # the workers start and load the kernels while the observing log is built
    workers = runner(args.jobs, args.dask, warm=True)
    try:
        with pipeline.logfile(args.workdir) as filed:
            filed.record(f"gmosred run {args.rawdir} --workdir {args.workdir}")
            plan = pipeline.prepare(args.rawdir, args.workdir, cfg, jobs=args.jobs)
            print(plan.describe())
            filed.record("plan:\n" + plan.describe())
            report = pipeline.run_plan(plan, args.workdir, cfg, force=args.force, workers=workers)
            workers = None
            lines = report.lines() + [f"outputs and log (gmosred.log) in {args.workdir}"]
            print("\n" + "\n".join(lines))
            filed.record("summary:\n" + "\n".join(lines))
    finally:
        if workers is not None:
            workers.close(cancel=True)
    return 1 if report.failed or report.stopped or plan.problems else 0


def config(args) -> int:
    from ..pipeline import config

    print(config.to_toml(config.load(args.config, config.parse_set(args.set))), end="")
    return 0


def demo(args) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.dir), size=args.size, seed=args.seed, jobs=args.jobs, detector=args.detector)
