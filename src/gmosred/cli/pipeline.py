"""The pipeline: ``gmosred run``, ``gmosred config``, ``gmosred demo``."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from .. import pipeline
    from ..pipeline import config
    from ..pipeline.runners import runner

    cfg = config.load(args.config, config.parse_set(args.set))
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    # the workers start and load the kernels while the observing log is built
    workers = None if args.dry_run else runner(args.jobs, args.dask, warm=True)
    try:
        with pipeline.logfile(args.workdir):
            plan = pipeline.prepare(args.rawdir, args.workdir, cfg, jobs=args.jobs)
            print(plan.describe())
            if args.dry_run:
                return 0
            reports = pipeline.run_plan(plan, args.workdir, cfg, force=args.force, workers=workers)
            workers = None
    finally:
        if workers is not None:
            workers.close(cancel=True)
    print()
    print(f"{'step':8s} {'made':>5s} {'up to date':>10s} {'failed':>7s} {'time':>8s}")
    for step, rep in reports.items():
        print(f"{step:8s} {rep.done:5d} {rep.skipped:10d} {rep.failed:7d} {rep.seconds:7.1f}s")
    print(f"outputs and log (gmosred.log) in {args.workdir}")
    return 1 if any(r.failed for r in reports.values()) or plan.problems else 0


def config(args) -> int:
    from ..pipeline import config

    print(config.to_toml(config.load(args.config, config.parse_set(args.set))), end="")
    return 0


def demo(args) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.dir), size=args.size, seed=args.seed, jobs=args.jobs, detector=args.detector)
