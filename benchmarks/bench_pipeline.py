"""The whole pipeline against its I/O floor, in one run: a small full-size set or the real program's size.

    python benchmarks/bench_pipeline.py [--set small|program] [--workdir DIR] [--jobs 2]

``small``: 6 biases, 6 twilight flats and 3 science frames of one filter at 2x2 (from the simulated
full-size run); ``program``: the M8 run at the real program's size (2x2: 90 science frames, about 300
calibrations; needs about 20 GB of disk). Runs the pipeline from scratch (observing log included),
measures in the same run the I/O floor (reading every raw file with plain astropy, all extensions'
data, and writing every product the pipeline wrote with astropy's ``writeto`` of the same HDUs), then
``gmosred run`` again on the folder now up to date (a fresh process, start-up included). Prints wall
time per step, peak memory and the ratios.
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
    ap.add_argument("--set", choices=("small", "program"), default="small")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    run = work / ("program" if args.set == "program" else "full")
    from astropy.io import fits

    from gmosred import pipeline
    from gmosred.pipeline import config
    from gmosred.obslog import index as obslog
    from gmosred.simulate import load_truth, simulate_run

    t0 = time.perf_counter()
    if not (run / "truth" / "run.json").exists():
        simulate_run(run, size=args.set if args.set == "program" else "full", seed=5, jobs=args.jobs,
                     show_progress=False)
    t_sim = time.perf_counter() - t0
    rawdir = run / "raw"
    if args.set == "small":  # 6 biases, 6 r twilight flats, 3 r science frames
        rawdir = work / "small-raw"
        shutil.rmtree(rawdir, ignore_errors=True)
        rawdir.mkdir()
        frames = load_truth(run).frames
        pick = ([r for r in frames if r["kind"] == "bias"][:6]
                + [r for r in frames if r["kind"] == "twilight" and r["band"] == "r"][:6]
                + [r for r in frames if r["kind"] == "science" and r["band"] == "r"][:3])
        for r in pick:
            (rawdir / f"{r['file']}.fits").symlink_to(run / "raw" / f"{r['file']}.fits")
    raws = sorted(rawdir.glob("*.fits"))

    out = work / "reduced"
    shutil.rmtree(out, ignore_errors=True)
    (rawdir / obslog.DEFAULT_DB).unlink(missing_ok=True)  # from scratch: the log is built too
    t0 = time.perf_counter()
    cfg = config.Config()
    plan = pipeline.prepare(rawdir, out, cfg, jobs=args.jobs, show_progress=False)
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
    import os
    import subprocess
    import sys

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gmosred", "run", str(rawdir), "--workdir", str(out), "--jobs",
                    str(args.jobs)], check=True, capture_output=True, env=dict(os.environ, GMOSRED_NO_PROGRESS="1"))
    print(f"gmosred run again, everything up to date: {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
    main()
