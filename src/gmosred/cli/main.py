"""The ``gmosred`` command: one subcommand per step.

Only argparse is imported at start-up; each subcommand imports what it needs,
so ``gmosred --help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _simulate(args) -> int:
    from ..simulate import simulate_run

    out = simulate_run(args.outdir, size=args.size, seed=args.seed, jobs=args.jobs)
    n = len(list((Path(out) / "raw").glob("*.fits")))
    print(f"wrote {n} raw files to {Path(out) / 'raw'} and the truth to {Path(out) / 'truth'}")
    return 0


def _info(args) -> int:
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


def _obslog(args) -> int:
    from ..obslog import index as obslog

    words = list(args.words)
    action = words.pop(0) if words and words[0] in ("use", "show") and (len(words) > 1 or not Path(words[0]).is_dir()) else "index"
    if not words:
        raise SystemExit("gmosred obslog: give the raw folder (gmosred obslog RAWDIR | use RAWDIR FILE... | show RAWDIR)")
    rawdir = Path(words.pop(0))
    db = Path(args.db) if args.db else obslog.default_db(rawdir)
    if action == "use":
        if args.use is None or not words:
            raise SystemExit("gmosred obslog use: give FILE... and --yes or --no")
        unknown = obslog.set_use(db, words, args.use)
        for f in unknown:
            print(f"error: {f}: not in the observing log {db}", file=sys.stderr)
        print(f"use_me={int(args.use)} for {len(words) - len(unknown)} file(s) in {db}")
        return 1 if unknown else 0
    if words:
        raise SystemExit(f"gmosred obslog: unexpected arguments: {' '.join(words)}")
    if action == "show":
        return _show_log(db, args.files)
    s = obslog.build(rawdir, db, include_focus=args.focus, checksum=not args.no_checksum, rebuild=args.rebuild,
                     jobs=args.jobs)
    for name, reason in sorted(s.rejected.items()):
        print(f"rejected: {rawdir / name}: {reason}", file=sys.stderr)
    print(f"{db}: {len(s.added)} added, {len(s.updated)} updated, {len(s.removed)} removed, "
          f"{s.unchanged} unchanged, {len(s.rejected)} rejected")
    return 0


def _show_log(db: Path, files: bool) -> int:
    from ..obslog import index as obslog

    if not db.exists():
        raise SystemExit(f"gmosred obslog show: no observing log {db} (run: gmosred obslog RAWDIR)")
    if files:
        con = obslog.connect(db)
        cols = ("File", "DateObs", "TimeObs", "ObsType", "ObsClass", "Object", "Filter2", "CcdBin", "RoI", "T_exp",
                "Airmass", "use_me")
        rows = [tuple("" if v is None else str(v) for v in r) for r in con.execute(
            f"SELECT {', '.join(cols)} FROM obslog ORDER BY DateTime, File")]
        con.close()
    else:
        cols = ("ObsClass", "ObsType", "Object", "Filter2", "CcdBin", "RoI", "N", "Used", "First", "Last", "Exposures")
        rows = [tuple("" if r[c] is None else str(r[c]) for c in cols) for r in obslog.summary_table(db)]
    _print_table(cols, rows)
    for r in obslog.rejected(db):
        print(f"rejected: {r['File']}: {r['Reason']}")
    return 0


def _print_table(cols, rows) -> None:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _select(args) -> int:
    from ..obslog import select

    criteria = {"Instrument": args.instrument, "RoI": args.roi, "CcdBin": args.bin, "Filter2": args.filter,
                "Object": args.object, "DateObs": args.dates, "AperMask": args.mask, "Disperser": args.disperser,
                "CentWave": args.centwave}
    if args.show_sql:
        sql, params = select.build_query(args.kind, **criteria)
        print(f"-- {sql}\n-- parameters: {params}", file=sys.stderr)
    rows = select.select(args.db, args.kind, **criteria)
    if not rows:
        print(f"no {args.kind} files: {select.explain_empty(args.db, args.kind, **criteria)}", file=sys.stderr)
        return 1
    from ..frame.model import stem

    lines = [r["Path"] if args.paths else stem(r["File"]) for r in rows]
    if args.at_list:
        Path(args.at_list).write_text("".join(line + "\n" for line in lines))
        print(f"wrote {len(lines)} file(s) to {args.at_list} (use it as @{args.at_list})", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0


def _inputs(items) -> list[str]:
    """File arguments, with IRAF-style @list files expanded."""
    out = []
    for item in items:
        if item.startswith("@"):
            lst = Path(item[1:])
            if not lst.exists():
                raise SystemExit(f"gmosred: error: list file {lst} not found")
            out += [line.strip() for line in lst.read_text().splitlines() if line.strip() and not line.startswith("#")]
        else:
            out.append(item)
    return out


def _add_step_options(s, command: str) -> None:
    import typing
    from dataclasses import fields

    from ..params import doc
    from ..pipeline.steps import OPTIONS, SECTIONS

    for section, prefix in OPTIONS[command]:
        defaults = SECTIONS[section]
        hints = typing.get_type_hints(type(defaults))
        g = s.add_argument_group(f"[{section}] parameters (as in gmosred config)")
        for f in fields(defaults):
            flag = _flag(prefix + f.name)
            value = getattr(defaults, f.name)
            text = f"{doc(f)}; default: {'automatic' if value is None else value}".replace("%", "%%")
            kind = next((t for t in (bool, int, float, str) if t in typing.get_args(hints[f.name]) + (hints[f.name],)))
            if kind is bool:
                g.add_argument(flag, dest=f"param:{prefix}{f.name}", action=argparse.BooleanOptionalAction, help=text)
            else:
                g.add_argument(flag, dest=f"param:{prefix}{f.name}", type=kind, help=text, metavar=f.name.upper(),
                               choices=f.metadata.get("choices") if kind is str and f.metadata.get("choices") else None)


#: The commands whose options derive from the step table (pipeline.steps.OPTIONS; named here so that
#: building the parser imports nothing heavy: a test holds the two equal).
STEP_COMMANDS = ("bias", "flat", "reduce", "mosaic")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _step_params(args, command: str) -> dict:
    """{section: parameters} from the defaults and the options given."""
    from ..pipeline.steps import parameters

    given = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("param:")}
    return parameters(command, given, flag=_flag)


def _bias(args) -> int:
    from ..calibrate.bias import make_master_bias

    p = _step_params(args, "bias")
    out = make_master_bias(_inputs(args.files), args.output, p["bias"], overscan=p["overscan"])
    print(f"wrote {out}")
    return 0


def _flat(args) -> int:
    from ..calibrate.flat import make_master_flat
    from ..frame.model import filter_name, read_raw

    files = _inputs(args.files)
    p = _step_params(args, "flat")
    output = args.output or f"MCflat_{filter_name(read_raw(files[0]).phu)}.fits"
    out = make_master_flat(files, output, bias=args.bias, params=p["flat"], overscan=p["overscan"],
                           combine=p["flat_combine"])
    print(f"wrote {out}")
    return 0


def _each(args, fn, jobs_args, verb: str) -> int:
    from ..pipeline.runners import run_each

    done, failed = run_each(fn, jobs_args, desc=verb, failed=f"not {verb}", jobs=args.jobs)
    print(f"{verb} {len(done)} frame(s) into {args.outdir}" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _reduce(args) -> int:
    p = _step_params(args, "reduce")
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    return _each(args, _reduce_one, [(f, args.outdir, args.bias, args.flat, p) for f in _inputs(args.files)],
                 "reduced")


def _reduce_one(path, outdir, bias, flat, p):
    from ..calibrate.reduce import reduce_frame

    return reduce_frame(path, outdir, bias, flat, p["reduce"], overscan=p["overscan"])


def _mosaic(args) -> int:
    from ..mosaic import mosaic_file

    p = _step_params(args, "mosaic")
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    return _each(args, mosaic_file, [(f, args.outdir, p["mosaic"]) for f in _inputs(args.files)], "mosaicked")


def _run(args) -> int:
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


def _config(args) -> int:
    from ..pipeline import config

    print(config.to_toml(config.load(args.config, config.parse_set(args.set))), end="")
    return 0


def _download(args) -> int:
    import logging

    from .. import archive
    from ..obslog import index as obslog

    arch = archive.Archive(args.archive or archive.DEFAULT_ARCHIVE)
    rawdir = Path(args.raw)
    dates = archive.parse_dates(args.dates)
    plan = archive.plan(arch, args.program, rawdir, filters=tuple(args.filter or ()), obj=args.object, dates=dates,
                        calibrations=args.calibrations, keep_compressed=args.keep_compressed)
    for note in plan.selection.notes:
        print(f"note: {note}")
    if not plan.files:
        return 1
    if args.list or args.dry_run:
        rows = plan.file_rows()
        cols = ("file", "type", "object", "filter", "binning", "UT", "MB", "status", "why")
        _print_table(cols, [tuple(r[c] for c in cols) for r in rows])
        print()
    rows = plan.summary_rows()
    cols = ("type", "filter", "binning", "files", "dates", "MB", "to fetch", "MB to fetch")
    _print_table(cols, [tuple(str(r[c]) for c in cols) for r in rows])
    todo = plan.to_fetch()
    size = sum(f.file_size or 0 for f in todo) / 1e6
    print(f"{len(plan.files)} files from {arch.url}: {len(todo)} to fetch ({size:.1f} MB), "
          f"{len(plan.files) - len(todo)} already in {rawdir}")
    if args.dry_run:
        return 0
    try:
        outcomes = archive.fetch_all(arch, plan.files, rawdir, connections=args.connections,
                                     keep_compressed=args.keep_compressed, replace=args.replace)
    except KeyboardInterrupt:
        print(f"gmosred: partial transfers are kept in {rawdir / '.partial'}; run the same command again to "
              "resume", file=sys.stderr)
        raise
    for o in outcomes:
        if o.message:
            logging.getLogger("gmosred").warning(o.message)
    counts = archive.count(outcomes)
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if not args.no_obslog and archive.arrived(outcomes):
        summary = obslog.build(rawdir)
        print(f"observing log {obslog.default_db(rawdir)}: {len(summary.added)} added, "
              f"{len(summary.updated)} updated, {summary.unchanged} unchanged")
    return 0 if len(archive.arrived(outcomes)) == len(outcomes) else 1


def _demo(args) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.dir), size=args.size, seed=args.seed, jobs=args.jobs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the options derived from the step parameters are added for ``command`` only."""
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
    s.add_argument("--dates", help="UT date YYYYMMDD or range YYYYMMDD-YYYYMMDD")
    s.add_argument("--dry-run", action="store_true", help="list what would be fetched and stop")
    s.add_argument("--list", action="store_true", help="list every file before fetching")
    s.add_argument("--archive", help="archive address (default: the Gemini Observatory Archive)")
    s.add_argument("--keep-compressed", action="store_true", help="keep the archive's .fits.bz2 files as they are")
    s.add_argument("--connections", type=int, default=4, help="parallel downloads (default 4)")
    s.add_argument("--replace", action="store_true", help="overwrite local files that differ from the archive's")
    s.add_argument("--no-obslog", action="store_true", help="do not index RAW into the observing log")
    s.set_defaults(func=_download)

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
    s.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--yes", dest="use", action="store_const", const=True, help="with 'use': use_me=1")
    g.add_argument("--no", dest="use", action="store_const", const=False, help="with 'use': use_me=0")
    s.add_argument("--files", action="store_true", help="with 'show': one line per file")
    s.set_defaults(func=_obslog, use=None)

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
    s.add_argument("--at-list", metavar="FILE", help="write an IRAF @list file instead of printing")
    s.add_argument("--show-sql", action="store_true", help="print the SQL and its parameters")
    s.set_defaults(func=_select)

    s = sub.add_parser("bias", help="master bias from raw biases (gbias) -> MCbias.fits")
    s.add_argument("files", nargs="+", help="raw biases (or @list files)")
    s.add_argument("-o", "--output", default="MCbias.fits")
    s.set_defaults(func=_bias)

    s = sub.add_parser("flat", help="master twilight flat of one filter (giflat) -> MCflat_<filter>.fits")
    s.add_argument("files", nargs="+", help="raw twilight flats of one filter (or @list files)")
    s.add_argument("--bias", help="master bias")
    s.add_argument("-o", "--output", help="output (default MCflat_<filter>.fits)")
    s.set_defaults(func=_flat)

    s = sub.add_parser("reduce", help="basic reduction of science frames (gireduce) -> rg<file>.fits")
    s.add_argument("files", nargs="+", help="raw science frames (or @list files)")
    s.add_argument("--bias", help="master bias")
    s.add_argument("--flat", help="master flat of the frames' filter")
    s.add_argument("--outdir", default=".", help="output folder (default: here)")
    s.add_argument("--jobs", type=int, default=1, help="parallel processes")
    s.set_defaults(func=_reduce)

    s = sub.add_parser("mosaic", help="the CCDs of reduced frames into one plane (gmosaic) -> mrg<file>.fits")
    s.add_argument("files", nargs="+", help="reduced rg*.fits files (or @list files)")
    s.add_argument("--outdir", default=".", help="output folder (default: here)")
    s.add_argument("--jobs", type=int, default=1, help="parallel processes")
    s.set_defaults(func=_mosaic)

    s = sub.add_parser("run", help="the whole reduction of a raw folder: log, masters, reduce, mosaic")
    s.add_argument("rawdir", help="folder of raw files")
    s.add_argument("--workdir", required=True, help="where the products go")
    s.add_argument("--config", help="TOML configuration (see gmosred config)")
    s.add_argument("--jobs", type=int, default=_cores(), help="parallel processes (default: all cores)")
    s.add_argument("--dask", metavar="ADDRESS", help="run on a dask.distributed scheduler instead")
    s.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    s.add_argument("--force", action="store_true", help="remake everything")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="one parameter, over the configuration file (repeatable; see gmosred config)")
    s.set_defaults(func=_run)

    s = sub.add_parser("config", help="print the pipeline configuration (defaults, or a file's merged with them)")
    s.add_argument("--config", help="a TOML file to merge")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="one parameter (repeatable)")
    s.set_defaults(func=_config)

    s = sub.add_parser("info", help="describe GMOS files (raw or processed) and check that they are readable")
    s.add_argument("files", nargs="+", help=".fits, .fits.bz2 or .fits.fz files")
    s.set_defaults(func=_info)
    if command in STEP_COMMANDS:
        _add_step_options(sub.choices[command], command)
    return p


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _version() -> str:
    from .. import __version__

    return __version__


class _Lower:
    """Log format 'gmosred: warning: ...' (a logging.Formatter made on first use, to keep start-up light)."""

    def __init__(self, fmt: str):
        self.fmt = fmt

    def format(self, record) -> str:
        return self.fmt % {"levelname": record.levelname.lower(), "message": record.getMessage()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import logging

    from ..errors import GmosredError

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lower("gmosred: %(levelname)s: %(message)s"))
    logger = logging.getLogger("gmosred")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return args.func(args)
    except GmosredError as e:
        print(f"gmosred: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gmosred: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    raise SystemExit(main())
