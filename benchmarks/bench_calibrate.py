"""Master bias and science reduction at full size: gmosred vs ccdproc doing the same work, one run.

    python benchmarks/bench_calibrate.py [--biases 20] [--workdir DIR]

Inputs: the simulated run at 2x2 binning (GMOS-S EEV, 3 x 1056 x 2304 raw frames), its biases
copied up to ``--biases`` frames. Each case runs in a fresh process, four times: "first" is the wall
time of the first run after the imports (gmosred's includes loading its compiled kernels, about
0.6 s once per process), "again" the best of the next three in the same process; memory is the
process's peak resident set (VmHWM, imports included).

Same work for both: per amplifier, overscan subtracted row by row (ccdproc: ``subtract_overscan``
with a per-row median, gmosred: its default row mode), trimmed to DATASEC; biases combined per CCD
with an average and 3-sigma clipping (ccdproc.combine; gmosred's engine with gbias' avsigclip).
Science: overscan, trim, bias, flat, gain, VAR, written to disk (ccdproc: subtract_overscan,
trim_image, subtract_bias, flat_correct, gain_correct, create_deviation, CCDData.write per CCD).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import full_run

CCDPROC_REDUCE = """
import warnings, numpy as np, ccdproc, astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
warnings.simplefilter("ignore")
(WORK / "cp").mkdir(exist_ok=True)
bias = fits.open(WORK / "MCbias.fits")
flat = fits.open(FLAT)
gains = (2.372, 2.076, 2.097)
rn = (3.98, 3.85, 3.16)
for k, path in enumerate({files}):
    with fits.open(path) as h:
        for ext in (1, 2, 3):
            hdr = h[ext].header
            ccd = CCDData(h[ext].data.astype(np.float32), unit="adu", meta=hdr)
            ccd = ccdproc.subtract_overscan(ccd, fits_section=hdr["BIASSEC"], overscan_axis=1, median=True)
            ccd = ccdproc.trim_image(ccd, fits_section=hdr["DATASEC"])
            ccd = ccdproc.create_deviation(ccd, gain=gains[ext - 1] * u.electron / u.adu,
                                           readnoise=rn[ext - 1] * u.electron)
            ccd = ccdproc.subtract_bias(ccd, CCDData(bias["SCI", ext].data, unit="adu"))
            ccd = ccdproc.flat_correct(ccd, CCDData(flat["SCI", ext].data, unit="adu"))
            ccd = ccdproc.gain_correct(ccd, gains[ext - 1] * u.electron / u.adu)
            ccd.write(WORK / "cp" / f"rg{{k}}_{{ext}}.fits", overwrite=True)
"""

CASES = {
    "gmosred_bias": """
from gmosred.calibrate.bias import make_master_bias
make_master_bias(BIASES, WORK / "MCbias.fits")
""",
    "ccdproc_bias": """
import warnings, numpy as np, ccdproc
from astropy.io import fits
from astropy.nddata import CCDData
warnings.simplefilter("ignore")
trimmed = {1: [], 2: [], 3: []}
for path in BIASES:
    with fits.open(path) as h:
        for ext in (1, 2, 3):
            hdr = h[ext].header
            ccd = CCDData(h[ext].data.astype(np.float32), unit="adu", meta=hdr)
            ccd = ccdproc.subtract_overscan(ccd, fits_section=hdr["BIASSEC"], overscan_axis=1, median=True)
            trimmed[ext].append(ccdproc.trim_image(ccd, fits_section=hdr["DATASEC"]))
for ext in (1, 2, 3):
    ccdproc.combine(trimmed[ext], method="average", sigma_clip=True, sigma_clip_low_thresh=3,
                    sigma_clip_high_thresh=3, dtype=np.float32)
""",
    "gmosred_reduce": """
from gmosred.calibrate.reduce import reduce_frame
reduce_frame(SCIENCE, WORK / "gm", bias=WORK / "MCbias.fits", flat=FLAT)
""",
    "gmosred_batch": """
from gmosred.calibrate.reduce import reduce_many
reduce_many(BATCH, WORK / "gm", bias=WORK / "MCbias.fits", flat=FLAT, show_progress=False)
""",
    "ccdproc_batch": CCDPROC_REDUCE.format(files="BATCH"),
    "ccdproc_reduce": CCDPROC_REDUCE.format(files="[SCIENCE]"),
}


def run_case(name: str, env: dict) -> dict:
    lines = CASES[name].strip("\n").splitlines()
    n_imports = next(k for k, line in enumerate(lines) if not line.startswith(("import ", "from ")))
    imports = "\n".join(lines[:n_imports])
    work = "\n".join("    " + line for line in lines[n_imports:])
    code = f"""
import json, time
from pathlib import Path
{imports}
BIASES = {env['biases']!r}
SCIENCE = {env['science']!r}
BATCH = {env['batch']!r}
FLAT = {env['flat']!r}
WORK = Path({env['work']!r})
(WORK / "gm").mkdir(exist_ok=True)
times = []
for _ in range(4):
    t0 = time.perf_counter()
{work}
    times.append(time.perf_counter() - t0)
peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
print(json.dumps({{"first": times[0], "again": min(times[1:]), "peak_mb": peak}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--biases", type=int, default=20)
    ap.add_argument("--workdir", help="keep the simulated run here (default: a temporary folder)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    run, truth = full_run(work)
    biases = [run / "raw" / f"{r['file']}.fits" for r in truth.frames if r["kind"] == "bias"]
    copies = []
    for k in range(args.biases):
        dest = work / "biases" / f"S20060901S{k + 1:04d}.fits"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy(biases[k % len(biases)], dest)
        copies.append(str(dest))
    science = next(r for r in truth.frames if r["kind"] == "science" and r["band"] == "r")
    flats = [str(run / "raw" / f"{r['file']}.fits") for r in truth.frames if r["kind"] == "twilight" and r["band"] == "r"]
    from gmosred.calibrate.flat import make_master_flat

    from gmosred.calibrate.bias import make_master_bias

    make_master_bias(copies, work / "MCbias.fits")
    flat = make_master_flat(flats, work / "MCflat_r.fits", bias=work / "MCbias.fits")
    batch = [str(run / "raw" / f"{r['file']}.fits") for r in truth.frames if r["kind"] == "science" and r["band"] == "r"]
    env = {"biases": copies, "science": str(run / "raw" / f"{science['file']}.fits"), "flat": str(flat),
           "work": str(work), "batch": batch}
    results = {name: run_case(name, env) for name in CASES}
    print(f"{'work':30s} {'gmosred first/again, peak':>27s} {'ccdproc first/again, peak':>27s} "
          f"{'time ratios':>12s} {'memory':>7s}")
    for label, ours, theirs in ((f"master bias, {args.biases} frames", "gmosred_bias", "ccdproc_bias"),
                                ("science reduction, 1 frame", "gmosred_reduce", "ccdproc_reduce"),
                                (f"science reduction, {len(batch)} frames", "gmosred_batch", "ccdproc_batch")):
        a, b = results[ours], results[theirs]
        print(f"{label:30s} {a['first']:7.2f}s {a['again']:6.2f}s {a['peak_mb']:6.0f}MB   "
              f"{b['first']:7.2f}s {b['again']:6.2f}s {b['peak_mb']:6.0f}MB   "
              f"{b['first'] / a['first']:4.1f}x {b['again'] / a['again']:4.1f}x {b['peak_mb'] / a['peak_mb']:6.1f}x")


if __name__ == "__main__":
    main()
