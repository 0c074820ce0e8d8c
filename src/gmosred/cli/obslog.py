"""The observing log: ``gmosred obslog`` (index, use, show) and ``gmosred select``."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import print_table


def obslog(args) -> int:
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
        con = obslog.connect(db, write=False)
        cols = ("File", "DateObs", "TimeObs", "ObsType", "ObsClass", "Object", "Filter2", "CcdBin", "RoI", "T_exp",
                "Airmass", "use_me")
        rows = [tuple("" if v is None else str(v) for v in r) for r in con.execute(
            f"SELECT {', '.join(cols)} FROM obslog ORDER BY DateTime, File")]
        con.close()
    else:
        cols = ("ObsClass", "ObsType", "Object", "Filter2", "CcdBin", "RoI", "N", "Used", "First", "Last", "Exposures")
        rows = [tuple("" if r[c] is None else str(r[c]) for c in cols) for r in obslog.summary_table(db)]
    print_table(cols, rows)
    for r in obslog.rejected(db):
        print(f"rejected: {r['File']}: {r['Reason']}")
    return 0


def select(args) -> int:
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
    if args.at_list:  # paths, so that `gmosred flat @list` finds the files from any folder
        from ..frame.model import writable_folder

        writable_folder(Path(args.at_list).parent, "give another --at-list")
        Path(args.at_list).write_text("".join(r["Path"] + "\n" for r in rows))
        print(f"wrote {len(lines)} file(s) to {args.at_list} (use it as @{args.at_list})", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0
