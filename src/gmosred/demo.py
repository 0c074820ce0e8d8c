"""``gmosred demo``: simulate the M8 run, fetch it, run the pipeline on it, compare with the truth.

The simulated run is served by a local stand-in for the Gemini archive (``DIR/archive`` holds its
raw files and the truth); ``gmosred download``'s machinery fetches the program and its associated
calibrations into ``DIR/raw``, and the pipeline does the cookbook's steps (observing log and
selections with the cookbook's dates, master bias, master twilight flats per filter, basic
reduction, mosaic). Each step's headline number is then checked against what the simulator put in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

#: The cookbook's date selections for the M8 program.
BIAS_DATES, FLAT_DATES = "2006-09-01:2006-10-30", "2006-09-10:2006-10-10"


def run_demo(workdir: Path, size: str = "small", seed: int = 1, jobs: int = 2) -> int:
    from . import archive
    from .frame import model as frame
    from .obslog import index as obslog, select
    from .simulate import load_truth, simulate_run
    from .simulate.archive import StandInArchive
    from .simulate.plan import FILTERS, PROGRAM

    workdir = Path(workdir)
    sim, raw, red = workdir / "archive", workdir / "raw", workdir / "reduced"
    red.mkdir(parents=True, exist_ok=True)
    times = {}
    t0 = time.perf_counter()
    if (sim / "truth" / "run.json").exists() and _same_run(sim / "truth" / "run.json", size, seed):
        print(f"using the simulated run already in {sim}")
    else:
        print(f"simulating the M8 run ({size}, seed {seed}) in {sim} ...")
        simulate_run(sim, size=size, seed=seed, jobs=jobs)
    times["simulate"] = time.perf_counter() - t0
    truth = load_truth(sim)
    checks = []  # (step, what, value, expected, ok)

    # the program and its associated calibrations, from the archive stand-in
    t0 = time.perf_counter()
    with StandInArchive(sorted((sim / "raw").glob("*.fits")), compress=False) as stand_in:
        arch = archive.Archive(stand_in.url)
        plan = archive.plan(arch, PROGRAM, raw, calibrations=True)
        print(f"downloading {PROGRAM} and its associated calibrations from a local archive stand-in "
              f"({len(plan.to_fetch())} of {len(plan.files)} files to fetch) ...")
        outcomes = archive.fetch_all(arch, plan.files, raw)
    times["download"] = time.perf_counter() - t0
    names = sorted(o.file.name[:-5] for o in archive.arrived(outcomes))
    checks.append(("download", "program + associated calibrations, verified", f"{len(names)} files",
                   f"{len(truth.frames)}", names == _truth_files(truth) and len(names) == len(outcomes)))

    # the whole pipeline, as `gmosred run RAWDIR --workdir DIR/reduced` does it
    from . import pipeline
    from .pipeline import config

    t0 = time.perf_counter()
    cfg = config.load(overrides={"select": {"bias_dates": BIAS_DATES, "flat_dates": FLAT_DATES}})
    with pipeline.logfile(red):
        steps = pipeline.prepare(raw, red, cfg, jobs=jobs)
        reports = pipeline.run_plan(steps, red, cfg, jobs=jobs)
    times["pipeline"] = time.perf_counter() - t0
    db = raw / obslog.DEFAULT_DB

    # the cookbook's selections against the truth
    b = truth.layout.binning
    setup = {"Instrument": "GMOS-S", "CcdBin": f"{b} {b}", "RoI": "Full"}
    sel = {"bias": select.select(db, "bias", DateObs=BIAS_DATES, **setup)}
    want = {"bias": _truth_files(truth, kind="bias")}
    for band in FILTERS:
        sel[("flat", band)] = select.select(db, "twiFlat", Filter2=band, DateObs=FLAT_DATES, **setup)
        sel[("sci", band)] = select.select(db, "sciImg", Filter2=band, Object="M8-%", **setup)
        want[("flat", band)] = _truth_files(truth, kind="twilight", band=band)
        want[("sci", band)] = _truth_files(truth, kind="science", band=band)
    ok = all(sorted(r["File"][:-5] for r in sel[k]) == want[k] for k in want)
    checks.append(("obslog", "selections equal the truth's frames", f"{sum(len(v) for v in sel.values())} files",
                   f"{sum(len(v) for v in want.values())}", ok))

    # master bias
    mb = frame.read_processed(red / "MCbias.fits")
    rn = np.array(truth.frames[0]["read_noise_e"]) / np.array(truth.frames[0]["gain"])
    expected = float(np.sqrt(np.mean((rn**2 + 1 / 12) / len(sel["bias"]))))
    rms = float(np.sqrt(np.mean([np.var(p.sci - truth.detector.bias2d[p.extver - 1]) for p in mb.planes])))
    checks.append(("bias", "rms(master - true bias) ADU", f"{rms:.3f}", f"{expected:.3f} (noise)",
                   abs(rms / expected - 1) < 0.15))

    # master flats
    worst = 0.0
    for band in FILTERS:
        for p in frame.read_processed(red / f"MCflat_{band}.fits").planes:
            good = (truth.detector.illum[p.extver - 1] == 1) & (truth.detector.badpix[p.extver - 1] == 0)
            worst = max(worst, abs(float(np.median(p.sci[good] / truth.detector.flat[band][p.extver - 1][good])) - 1))
    checks.append(("flat", "worst |median(master/true flat) - 1|", f"{100 * worst:.3f}%", "< 0.2%", worst < 0.002))

    # reduction and mosaic
    rec = next(r for r in truth.frames if r["kind"] == "science" and r["band"] == "i")
    z = []
    for p in frame.read_processed(red / f"rg{rec['file']}.fits").planes:
        model = truth.electrons(rec, p.extver) / truth.detector.flat["i"][p.extver - 1]
        good = p.dq == 0
        z.append(((p.sci - model) / np.sqrt(p.var))[good])
    z = np.concatenate(z)
    robust = float(1.4826 * np.median(np.abs(z - np.median(z))))
    n_rg = reports["reduce"].done + reports["reduce"].skipped
    checks.append(("reduce", f"{n_rg} frames; scatter of (SCI - truth)/sqrt(VAR)", f"{robust:.3f}", "1.00",
                   abs(robust - 1) < 0.03 and not reports["reduce"].failed))
    mosaics = sorted(red.glob("mrg*.fits"))
    m = frame.read_processed(mosaics[0]).planes[0]
    rg2 = frame.read_processed(red / mosaics[0].name[1:]).plane(2)
    nxb, gap = 2048 // b, 37 // b
    checks.append(("mosaic", f"{len(mosaics)} frames; size, CRPIX1 - CCD2's",
                   f"{m.sci.shape[1]}x{m.sci.shape[0]}, +{m.header['CRPIX1'] - rg2.header['CRPIX1']:.0f}",
                   f"{3 * nxb + 2 * gap}x{4608 // b}, +{nxb + gap}",
                   not reports["mosaic"].failed and m.sci.shape == (4608 // b, 3 * nxb + 2 * gap)))

    print()
    print(f"outputs: {red} (MCbias.fits, MCflat_<filter>.fits, rg*.fits, mrg*.fits, gmosred.log); "
          f"observing log: {db}")
    print(f"{'step':8s} {'made':>5s} {'up to date':>10s} {'failed':>7s} {'time':>8s}")
    for step, rep in reports.items():
        print(f"{step:8s} {rep.done:5d} {rep.skipped:10d} {rep.failed:7d} {rep.seconds:7.1f}s")
    print()
    print(f"{'step':8s} {'check against the truth':48s} {'found':>22s} {'expected':>18s}  ok")
    for step, what, value, exp, good in checks:
        print(f"{step:8s} {what:48s} {value:>22s} {exp:>18s}  {'yes' if good else 'NO'}")
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return 0 if all(c[-1] for c in checks) else 1


def _truth_files(truth, **match) -> list[str]:
    return sorted(r["file"] for r in truth.frames if all(r[k] == v for k, v in match.items()))


def _same_run(run_json: Path, size: str, seed: int) -> bool:
    run = json.loads(run_json.read_text())
    return run.get("size") == size and run.get("seed") == seed and \
        len(list(run_json.parent.glob("frames/*.npz"))) == len(run["frames"])
