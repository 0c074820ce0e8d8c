"""``gmosred demo``: simulate the M8 run, run what gmosred has on it, compare with the truth."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np


def run_demo(workdir: Path, size: str = "small", seed: int = 1, jobs: int = 2) -> int:
    from . import frame
    from .progress import progress
    from .simulate import load_truth, simulate_run

    workdir = Path(workdir)
    run_json = workdir / "truth" / "run.json"
    t0 = time.perf_counter()
    if run_json.exists() and _same_run(run_json, size, seed):
        print(f"using the simulated run already in {workdir}")
    else:
        print(f"simulating the M8 run ({size}, seed {seed}) in {workdir} ...")
        simulate_run(workdir, size=size, seed=seed, jobs=jobs)
    t_sim = time.perf_counter() - t0
    truth = load_truth(workdir)

    # read every raw file with the data model and check the overscan against the true bias level
    t0 = time.perf_counter()
    kinds: Counter = Counter()
    offsets = []
    for rec in progress(truth.frames, desc="read raw"):
        raw = frame.read_raw(workdir / "raw" / f"{rec['file']}.fits")
        kinds[(rec["kind"], rec["band"] or "-")] += 1
        rows = truth.extras(rec["file"])
        for amp in raw.amps:
            over = amp.data[amp.biassec.slices][:, 4:-4].astype(np.float32)  # skip the contaminated columns
            level = float(np.mean(over - rows[f"row{amp.ccd}"][:, None]))
            offsets.append(level - rec["bias_level_adu"][amp.ccd - 1])
    t_read = time.perf_counter() - t0
    offsets = np.array(offsets)

    # the cookbook's first step: the observing log, and its selections checked against the truth
    from . import obslog, select

    t0 = time.perf_counter()
    db = workdir / "obsLog.sqlite3"
    obslog.build(workdir / "raw", db, show_progress=False)
    t_log = time.perf_counter() - t0
    setup = {"Instrument": "GMOS-S", "CcdBin": f"{truth.layout.binning} {truth.layout.binning}", "RoI": "Full"}
    checks = [("bias", {}, {"kind": "bias"})]
    checks += [("twiFlat", {"Filter2": b}, {"kind": "twilight", "band": b}) for b in ("Ha", "HaC", "SII", "r", "i")]
    checks += [("sciImg", {"Filter2": b, "Object": "M8-%"}, {"kind": "science", "band": b})
               for b in ("Ha", "HaC", "SII", "r", "i")]
    selections = []
    for kind, criteria, match in checks:
        got = sorted(r["File"][:-5] for r in select.select(db, kind, **setup, **criteria))
        want = sorted(r["file"] for r in truth.frames if all(r[k] == v for k, v in match.items()))
        selections.append((kind, criteria.get("Filter2", "-"), len(got), got == want))

    print()
    print(f"raw files: {workdir / 'raw'}   truth: {workdir / 'truth'}")
    print(f"{'kind':10s} {'filter':6s} {'frames':>6s}")
    for (kind, band), n in sorted(kinds.items()):
        print(f"{kind:10s} {band:6s} {n:6d}")
    print()
    print(f"stars in the truth catalogue: {len(truth.stars)}; in the reference catalogue: {len(truth.reference)}")
    print(f"overscan level - true bias level over {offsets.size} amplifiers: mean {offsets.mean():+.3f} ADU, "
          f"rms {offsets.std():.3f} ADU (expected ~{_expected_rms(truth):.3f} from read noise)")
    print()
    print(f"observing log: {db}")
    print(f"{'selection':10s} {'filter':6s} {'files':>5s}  matches the truth")
    for kind, band, n, ok in selections:
        print(f"{kind:10s} {band:6s} {n:5d}  {'yes' if ok else 'NO'}")
    print()
    print(f"simulation {t_sim:.1f} s, reading {len(truth.frames)} raw frames {t_read:.1f} s, "
          f"observing log {t_log:.1f} s")
    if not all(ok for *_, ok in selections):
        return 1
    return 0


def _same_run(run_json: Path, size: str, seed: int) -> bool:
    run = json.loads(run_json.read_text())
    return run.get("size") == size and run.get("seed") == seed and len(list(run_json.parent.glob("frames/*.npz"))) == len(run["frames"])


def _expected_rms(truth) -> float:
    rec = truth.frames[0]
    ny = truth.layout.shape[0]
    rn_adu = np.array(rec["read_noise_e"]) / np.array(rec["gain"])
    return float(np.sqrt(np.mean(rn_adu**2) / (ny * 24)))
