"""The ``gmosred`` command: the parser and the entry point; the verbs live by group beside it
(frames: info, simulate; archive: download; obslog: obslog, select; calibrate: bias, flat, reduce,
mosaic; pipeline: run, config, demo).

Only argparse is imported at start-up; each verb imports what it needs, so ``gmosred --help``
answers at once.
"""
from __future__ import annotations

import argparse
import sys

from . import archive, calibrate, frames, obslog, pipeline


def _detectors() -> tuple[str, ...]:
    """The simulator's detector sets (its table, read without importing the simulator)."""
    import csv
    from importlib import resources

    with (resources.files("gmosred") / "simulate" / "data" / "detectors.csv").open(newline="") as f:
        return tuple(r["name"] for r in csv.DictReader(f))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the options derived from the step parameters are added for ``command`` only."""
    p = argparse.ArgumentParser(
        prog="gmosred",
        description="Reduce Gemini GMOS imaging data: raw archive files to calibrated mosaics.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    DETECTORS = _detectors()

    s = sub.add_parser("demo", help="simulate the M8 run and show what gmosred makes of it")
    s.add_argument("dir", nargs="?", default="gmosred-demo", help="working folder (default: ./gmosred-demo)")
    s.add_argument("--size", choices=("small", "full"), default="small", help="4x4 (small) or 2x2 (full) binning")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--jobs", type=_count, default=2, help="processes for the simulation (default 2)")
    s.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0],
                   help="detector set to simulate (default: gmos-s-eev, the real M8 program's)")
    s.set_defaults(func=pipeline.demo)

    s = sub.add_parser("simulate", help="make a simulated GMOS observing run with its truth")
    s.add_argument("outdir", help="output folder: raw files go to OUTDIR/raw, the truth to OUTDIR/truth")
    s.add_argument("--size", choices=("small", "full", "program"), default="small",
                   help="small: 4x4 binning, 65 frames; full: 2x2, 70 frames; program: 2x2, the real "
                        "program's size (90 science, ~300 calibrations)")
    s.add_argument("--seed", type=int, default=1, help="random seed (the run is deterministic for a seed)")
    s.add_argument("--jobs", type=_count, default=1, help="parallel processes")
    s.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0],
                   help="detector set (default: gmos-s-eev, the real M8 program's); the run moves to its "
                        "telescope and years")
    s.set_defaults(func=frames.simulate)

    s = sub.add_parser("download", help="fetch a program's raw files and their calibrations from the Gemini archive",
                       description="Search the Gemini Observatory Archive for PROGRAM's raw files (and, with "
                                   "--calibrations, the biases, twilight flats and standards the archive associates "
                                   "with them), show what will be fetched, fetch it (resumable, verified, in "
                                   "parallel), decompress it and index RAW into the observing log. Proprietary "
                                   "data: set GEMINI_ARCHIVE_SESSION to your archive session cookie.")
    s.add_argument("program", help="program ID, e.g. GS-2006B-Q-18")
    s.add_argument("--raw", required=True, help="folder for the raw files (e.g. raw/)")
    s.add_argument("--calibrations", action="store_true", help="also fetch the associated calibrations")
    s.add_argument("--filter", action="append", metavar="BAND",
                   help="only frames in this filter (repeatable): r, g, Ha...")
    s.add_argument("--object", help="only this target name ('*' wildcards)")
    s.add_argument("--dates", help="UT date YYYY-MM-DD or inclusive range YYYY-MM-DD:YYYY-MM-DD (as in select)")
    s.add_argument("--dry-run", action="store_true", help="list what would be fetched and stop")
    s.add_argument("--list", action="store_true", help="list every file before fetching")
    s.add_argument("--archive", help="archive address (default: the Gemini Observatory Archive)")
    s.add_argument("--keep-compressed", action="store_true", help="keep the archive's .fits.bz2 files as they are")
    s.add_argument("--connections", type=_count, default=4, help="parallel downloads (default 4)")
    s.add_argument("--replace", action="store_true", help="overwrite local files that differ from the archive's")
    s.add_argument("--no-obslog", action="store_true", help="do not index RAW into the observing log")
    s.set_defaults(func=archive.download)

    s = sub.add_parser(
        "obslog", help="index a raw folder into an SQLite observing log (the cookbook's obslog.py)",
        usage="gmosred obslog RAWDIR [options] | obslog use RAWDIR FILE... --yes|--no | obslog show RAWDIR",
        description="Index RAWDIR into its observing log (default RAWDIR/obsLog.sqlite3), incrementally; "
                    "'use' sets use_me for files; 'show' prints the log.")
    s.add_argument("words", nargs="+", metavar="[use|show] RAWDIR [FILE...]")
    s.add_argument("--db", help="observing log (default RAWDIR/obsLog.sqlite3)")
    s.add_argument("--focus", action="store_true", help="include focus frames")
    s.add_argument("--rebuild", action="store_true", help="re-read every file (use_me choices are kept)")
    s.add_argument("--no-checksum", action="store_true", help="skip the MD5 of new and changed files")
    s.add_argument("--jobs", type=_count, default=None, help="parallel processes (default: all cores)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--yes", dest="use", action="store_const", const=True, help="with 'use': use_me=1")
    g.add_argument("--no", dest="use", action="store_const", const=False, help="with 'use': use_me=0")
    s.add_argument("--files", action="store_true", help="with 'show': one line per file")
    s.set_defaults(func=obslog.obslog, use=None)

    from_kinds = ("bias", "dark", "twiFlat", "sciImg", "gcalFlat", "arc", "std")
    s = sub.add_parser("select", help="select files from the observing log (the cookbook's fileSelect.py)",
                       description="Print the files of one kind that pass the cookbook's selection rules "
                                   "(use_me=1, LIKE on Filter2 and Object, date range / GLOB / equality).")
    s.add_argument("kind", choices=from_kinds)
    s.add_argument("--db", required=True, help="observing log (e.g. raw/obsLog.sqlite3)")
    s.add_argument("--instrument", help="GMOS-N or GMOS-S")
    s.add_argument("--bin", help="CcdBin, e.g. '2 2'")
    s.add_argument("--roi", help="RoI: Full, CentSp, ...")
    s.add_argument("--filter", help="filter: 'Ha' selects Filter2 LIKE 'Ha_G%%' (not HaC); or a LIKE pattern")
    s.add_argument("--object", help="Object LIKE pattern, e.g. 'M8-%%'")
    s.add_argument("--dates", help="YYYY-MM-DD:YYYY-MM-DD (inclusive), a GLOB pattern, or one date")
    s.add_argument("--mask", help="AperMask (gcalFlat, arc, std)")
    s.add_argument("--disperser", help="Disperser (gcalFlat, arc, std)")
    s.add_argument("--centwave", type=float, help="CentWave (gcalFlat, arc, std)")
    s.add_argument("--paths", action="store_true", help="print full paths instead of names")
    s.add_argument("--at-list", metavar="FILE", help="write an IRAF @list file (of paths) instead of printing")
    s.add_argument("--show-sql", action="store_true", help="print the SQL and its parameters")
    s.set_defaults(func=obslog.select)

    s = sub.add_parser("bias", help="master bias from raw biases (gbias) -> MCbias.fits")
    s.add_argument("files", nargs="+", help="raw biases (or @list files)")
    s.add_argument("-o", "--output", default="MCbias.fits")
    s.set_defaults(func=calibrate.bias)

    s = sub.add_parser("flat", help="master twilight flat of one filter (giflat) -> MCflat_<filter>.fits")
    s.add_argument("files", nargs="+", help="raw twilight flats of one filter (or @list files)")
    s.add_argument("--bias", help="master bias")
    s.add_argument("-o", "--output", help="output (default MCflat_<filter>.fits)")
    s.set_defaults(func=calibrate.flat)

    s = sub.add_parser("reduce", help="basic reduction of science frames (gireduce) -> rg<file>.fits")
    s.add_argument("files", nargs="+", help="raw science frames (or @list files)")
    s.add_argument("--bias", help="master bias")
    s.add_argument("--flat", help="master flat of the frames' filter")
    s.add_argument("--outdir", default=".", help="output folder (default: here)")
    s.add_argument("--jobs", type=_count, default=1, help="parallel processes")
    s.set_defaults(func=calibrate.reduce)

    s = sub.add_parser("fringe", help="fringe frame from reduced, dithered frames of one filter (gifringe) "
                                      "-> MCfringe_<filter>.fits")
    s.add_argument("files", nargs="+", help="reduced rg*.fits files of one setup and filter (or @list files)")
    s.add_argument("-o", "--output", help="output (default MCfringe_<filter>.fits)")
    s.set_defaults(func=calibrate.fringe)

    s = sub.add_parser("rmfringe", help="the fringe fitted and removed from reduced frames (girmfringe) "
                                        "-> frg<file>.fits")
    s.add_argument("files", nargs="+", help="reduced rg*.fits files (or @list files)")
    s.add_argument("--fringe", required=True, help="fringe frame (MCfringe_<filter>.fits)")
    s.add_argument("--outdir", default=".", help="output folder (default: here)")
    s.add_argument("--jobs", type=_count, default=1, help="parallel processes")
    s.set_defaults(func=calibrate.rmfringe)

    s = sub.add_parser("mosaic", help="the CCDs of reduced frames into one plane (gmosaic) -> mrg<file>.fits")
    s.add_argument("files", nargs="+", help="reduced rg*.fits files (or @list files)")
    s.add_argument("--outdir", default=".", help="output folder (default: here)")
    s.add_argument("--jobs", type=_count, default=1, help="parallel processes")
    s.set_defaults(func=calibrate.mosaic)

    s = sub.add_parser("measure", help="sources, WCS fitted to Gaia and zero point of mosaics -> cmrg<file>.fits")
    s.add_argument("files", nargs="+", help="mosaicked mrg*.fits files (or @list files)")
    s.add_argument("--outdir", default=".", help="output folder (default: here); catalogues are cached in it")
    s.add_argument("--jobs", type=_count, default=1, help="parallel processes")
    s.set_defaults(func=calibrate.measure)

    s = sub.add_parser("run", help="the whole reduction of a raw folder: log, masters, reduce, fringe, mosaic, "
                                   "measure")
    s.add_argument("rawdir", help="folder of raw files")
    s.add_argument("--workdir", required=True, help="where the products go")
    s.add_argument("--config", help="TOML configuration (see gmosred config)")
    s.add_argument("--jobs", type=_count, default=_cores(), help="parallel processes (default: all cores)")
    s.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler instead")
    s.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    s.add_argument("--force", action="store_true", help="remake everything")
    s.add_argument("--until", choices=("reduce", "rmfringe", "mosaic", "measure"),
                   help="last step of the science frames' recipe (default: measure)")
    s.add_argument("--fringe", metavar="FILE", help="a fringe frame for the frames of its filter (default: one made "
                                                    "from the program's dithered frames)")
    s.add_argument("--refcat", metavar="FILE", help="astrometric catalogue file (default: Gaia DR3, queried and cached)")
    s.add_argument("--photcat", metavar="FILE", help="photometric catalogue file (default: Pan-STARRS1, queried and cached)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="one parameter, over the configuration file (repeatable; see gmosred config)")
    s.set_defaults(func=pipeline.run)

    s = sub.add_parser("config", help="print the pipeline configuration (defaults, or a file's merged with them)")
    s.add_argument("--config", help="a TOML file to merge")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="one parameter (repeatable)")
    s.set_defaults(func=pipeline.config)

    s = sub.add_parser("info", help="describe GMOS files (raw or processed) and check that they are readable")
    s.add_argument("files", nargs="+", help=".fits, .fits.bz2 or .fits.fz files")
    s.set_defaults(func=frames.info)
    if command in calibrate.STEP_COMMANDS:
        calibrate.add_step_options(sub.choices[command], command)
    return p


def _count(text: str) -> int:
    """A number of processes or connections: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import logging

    from ..errors import GmosredError, os_problem

    from ..progress import MessageHandler

    handler = MessageHandler()
    logger = logging.getLogger("gmosred")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return args.func(args)
    except GmosredError as e:
        print(f"gmosred: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder not writable, a full disk, a file gone: what a user can cause
        print(f"gmosred: error: {os_problem(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gmosred: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    raise SystemExit(main())
