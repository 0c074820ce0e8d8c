"""The whole pipeline on a run as large as the real program, against its I/O floor, one run.

    python benchmarks/bench_pipeline.py [--workdir DIR] [--jobs 2]

Simulates (once) the M8 run at the real program's size (2x2 binning: 90 science frames, about 300
calibrations), runs ``gmosred run`` on it, and measures in the same run the I/O floor: reading every
raw file (plain astropy, all extensions' data) and writing every product the pipeline wrote (plain
astropy ``writeto`` of the same HDUs). Prints wall time per step, peak memory and the ratio to the
floor. Needs about 20 GB of disk.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="keep the simulated run here (default: a temporary folder)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    run = work / "program"
    from astropy.io import fits

    from gmosred.pipeline import config, plan as pipeline
    from gmosred.obslog import index as obslog
    from gmosred.simulate import simulate_run

    t0 = time.perf_counter()
    if not (run / "truth" / "run.json").exists():
        simulate_run(run, size="program", seed=5, jobs=args.jobs, show_progress=False)
    t_sim = time.perf_counter() - t0
    raws = sorted((run / "raw").glob("*.fits"))

    out = work / "reduced"
    shutil.rmtree(out, ignore_errors=True)
    (run / "raw" / obslog.DEFAULT_DB).unlink(missing_ok=True)  # from scratch: the log is built too
    t0 = time.perf_counter()
    cfg = config.Config()
    plan = pipeline.prepare(run / "raw", out, cfg, jobs=args.jobs, show_progress=False)
    t_plan = time.perf_counter() - t0
    reports = pipeline.run_plan(plan, out, cfg, jobs=args.jobs, show_progress=False)
    t_total = time.perf_counter() - t0
    peak_main = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    # the I/O floor: every raw file read, every product written, with plain astropy
    t0 = time.perf_counter()
    for p in raws:
        with fits.open(p) as h:
            for hdu in h[1:]:
                hdu.data  # noqa: B018
    t_read = time.perf_counter() - t0
    products = sorted(out.glob("*.fits"))
    floor_dir = work / "floor"
    floor_dir.mkdir(exist_ok=True)
    t_write = 0.0
    for p in products:
        with fits.open(p) as h:
            h.readall()
            t1 = time.perf_counter()
            h.writeto(floor_dir / p.name, overwrite=True)
            t_write += time.perf_counter() - t1
        (floor_dir / p.name).unlink()
    floor = t_read + t_write

    print(f"run: {len(raws)} raw files ({sum(p.stat().st_size for p in raws) / 1e9:.1f} GB), "
          f"{len(products)} products; simulated in {t_sim:.0f} s; {args.jobs} processes")
    print(f"{'step':10s} {'made':>5s} {'time':>8s}")
    print(f"{'obslog':10s} {'':5s} {t_plan:7.1f}s")
    for step, rep in reports.items():
        print(f"{step:10s} {rep.done:5d} {rep.seconds:7.1f}s")
    print(f"{'total':10s} {'':5s} {t_total:7.1f}s   peak memory: main {peak_main:.0f} MB, largest worker {peak_child:.0f} MB")
    print(f"I/O floor: read raw {t_read:.1f}s + write products {t_write:.1f}s = {floor:.1f}s;"
          f" pipeline / floor = {t_total / floor:.1f}x")


if __name__ == "__main__":
    main()
