"""The ``gmosred`` command: one subcommand per step.

Only argparse is imported at start-up; each subcommand imports what it needs,
so ``gmosred --help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _simulate(args) -> int:
    from .simulate import simulate_run

    out = simulate_run(args.outdir, size=args.size, seed=args.seed, jobs=args.jobs)
    n = len(list((Path(out) / "raw").glob("*.fits")))
    print(f"wrote {n} raw files to {Path(out) / 'raw'} and the truth to {Path(out) / 'truth'}")
    return 0


def _info(args) -> int:
    from . import frame
    from .errors import GmosredError

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


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.dir), size=args.size, seed=args.seed, jobs=args.jobs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gmosred",
        description="Reduce Gemini GMOS imaging data: raw archive files to calibrated mosaics.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("demo", help="simulate the M8 run and show what gmosred makes of it")
    s.add_argument("dir", nargs="?", default="gmosred-demo", help="working folder (default: ./gmosred-demo)")
    s.add_argument("--size", choices=("small", "full"), default="small", help="4x4 (small) or 2x2 (full) binning")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--jobs", type=int, default=2, help="processes for the simulation (default 2)")
    s.set_defaults(func=_demo)

    s = sub.add_parser("simulate", help="make a simulated GMOS-S observing run with its truth")
    s.add_argument("outdir", help="output folder: raw files go to OUTDIR/raw, the truth to OUTDIR/truth")
    s.add_argument("--size", choices=("small", "full", "program"), default="small",
                   help="small: 4x4 binning, 65 frames; full: 2x2, 70 frames; program: 2x2, the real "
                        "program's size (90 science, ~300 calibrations)")
    s.add_argument("--seed", type=int, default=1, help="random seed (the run is deterministic for a seed)")
    s.add_argument("--jobs", type=int, default=1, help="parallel processes")
    s.set_defaults(func=_simulate)

    s = sub.add_parser("info", help="describe GMOS files (raw or processed) and check that they are readable")
    s.add_argument("files", nargs="+", help=".fits, .fits.bz2 or .fits.fz files")
    s.set_defaults(func=_info)
    return p


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .errors import GmosredError

    try:
        return args.func(args)
    except GmosredError as e:
        print(f"gmosred: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gmosred: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
