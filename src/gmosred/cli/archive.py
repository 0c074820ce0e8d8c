"""The Gemini archive: ``gmosred download``."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import print_table


def download(args) -> int:
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
        print_table(cols, [tuple(r[c] for c in cols) for r in rows])
        print()
    rows = plan.summary_rows()
    cols = ("type", "filter", "binning", "files", "dates", "MB", "to fetch", "MB to fetch")
    print_table(cols, [tuple(str(r[c]) for c in cols) for r in rows])
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
