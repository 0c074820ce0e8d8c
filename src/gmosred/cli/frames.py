"""Files: ``gmosred info`` (the data model) and ``gmosred simulate``."""
from __future__ import annotations

import sys
from pathlib import Path


def simulate(args) -> int:
    from ..frame.model import writable_folder
    from ..simulate import simulate_run

    writable_folder(args.outdir, "give another folder")
    out = simulate_run(args.outdir, size=args.size, seed=args.seed, jobs=args.jobs, detector=args.detector)
    n = len(list((Path(out) / "raw").glob("*.fits")))
    print(f"wrote {n} raw files to {Path(out) / 'raw'} and the truth to {Path(out) / 'truth'}")
    return 0


def info(args) -> int:
    from ..frame import model as frame
    from ..errors import GmosredError

    failed = 0
    for path in args.files:
        try:
            f = frame.read(path)
        except GmosredError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        if isinstance(f, frame.RawFrame):
            print(f"{path}: raw {f.phu.get('INSTRUME', '').strip()} {f.obstype} {f.phu.get('OBJECT', '').strip()!r} "
                  f"filter {f.filter}, {f.binning[0]}x{f.binning[1]} binning, ROI {f.roi}, "
                  f"{f.read_speed} read / {f.gain_setting} gain, {len(f.amps)} amplifiers")
            for a in f.amps:
                print(f"  ext {a.index}: CCD{a.ccd} {a.ampname!r} DATASEC {a.datasec} BIASSEC {a.biassec} "
                      f"gain {a.gain} e-/ADU, read noise {a.read_noise} e-")
        else:
            print(f"{path}: processed, {len(f.planes)} SCI extension(s): "
                  + ", ".join(f"{p.extver}: {p.sci.shape[1]}x{p.sci.shape[0]}"
                              f"{' +VAR' if p.var is not None else ''}{' +DQ' if p.dq is not None else ''}"
                              for p in f.planes))
    return 1 if failed else 0
