"""The observing log: an SQLite table ``obslog`` of every raw file's headers, as the cookbook's
``obslog.py`` builds it (same columns, types and meanings, so its SQL and habits still work),
plus the columns a modern user needs, built incrementally and safely.

* Headers only: pixel data are never decoded (:mod:`gmosred.headers`).
* Incremental: new files are added, files whose size or mtime changed are re-read (and kept
  as they were if their MD5 did not change), deleted files are dropped; ``use_me`` choices are
  never overwritten, and survive ``rebuild=True``.
* Files that cannot be used go to the ``rejected`` table with the reason; the rest are indexed.
* All changes are written in one transaction (``BEGIN IMMEDIATE``, with a busy timeout), so two
  processes indexing the same folder at once serialise instead of corrupting the log.
"""
from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import instruments
from ..errors import GmosFileError, GmosredError
from ..frame.model import EXTENSIONS, stem

DEFAULT_DB = "obsLog.sqlite3"

#: The cookbook's columns: (name, SQL type). Order and types as its obslog.py creates them.
COOKBOOK_COLUMNS = [
    ("obs_id", "INTEGER PRIMARY KEY"), ("use_me", "INTEGER DEFAULT 1"), ("N_ext", "INTEGER DEFAULT 0"),
    ("File", "TEXT UNIQUE ON CONFLICT IGNORE"), ("DateObs", "TEXT NOT NULL"), ("TimeObs", "TEXT NOT NULL"),
    ("Instrument", "TEXT"), ("Object", "TEXT"), ("RA", "REAL"), ("Dec", "REAL"), ("ObsType", "TEXT NOT NULL"),
    ("ObsClass", "TEXT"), ("CcdBin", "TEXT NOT NULL"), ("RoI", "TEXT NOT NULL"), ("NodMode", "TEXT DEFAULT 'NONE'"),
    ("NS_Shift", "INTEGER DEFAULT 0"), ("NS_Cycles", "INTEGER DEFAULT 0"), ("DTA_Xoffset", "REAL DEFAULT 0."),
    ("Filter1", "TEXT NOT NULL"), ("Filter2", "TEXT NOT NULL"), ("Disperser", "TEXT NOT NULL"),
    ("AperMask", "TEXT NOT NULL"), ("MaskType", "TEXT NOT NULL"), ("Rotator", "REAL NOT NULL"),
    ("CentWave", "REAL NOT NULL"), ("T_exp", "REAL NOT NULL"), ("Airmass", "REAL"),
]
#: gmosred's additions.
EXTRA_COLUMNS = [
    ("Path", "TEXT"), ("DateTime", "TEXT"), ("DataLabel", "TEXT"), ("ProgramID", "TEXT"), ("ObsID", "TEXT"),
    ("DetID", "TEXT"), ("ReadSpeed", "TEXT"), ("GainSetting", "TEXT"), ("RoIName", "TEXT"), ("XBin", "INTEGER"),
    ("YBin", "INTEGER"), ("FileSize", "INTEGER"), ("MTime", "REAL"), ("Checksum", "TEXT"),
]
REJECTED_COLUMNS = [("File", "TEXT PRIMARY KEY"), ("Path", "TEXT"), ("Reason", "TEXT"), ("FileSize", "INTEGER"),
                    ("MTime", "REAL")]
#: Cookbook: MASKTYP -> MaskType.
MASK_TYPES = {-1: "IFU", 0: "None", 1: "Mask"}
#: Cookbook: ObsClass when a header has none.
INFERRED_CLASS = {"BIAS": "Cal", "DARK": "Cal", "ARC": "Cal", "FLAT": "Cal", "OBJECT": "science"}
#: Preference when a frame is present in several forms.
FORM_ORDER = {ext: k for k, ext in enumerate(EXTENSIONS)}
DTA_MICRON_PER_PIXEL = 13.5


@dataclass
class Summary:
    """What one indexing run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    rejected: dict[str, str] = field(default_factory=dict)


def default_db(rawdir) -> Path:
    return Path(rawdir) / DEFAULT_DB


def connect(db, *, write: bool = True) -> sqlite3.Connection:
    """Open an observing log: to write (created or upgraded if needed), or only to read (``write=False``:
    never created or changed; a missing log is an error saying how to make one)."""
    db = Path(db)
    try:
        if write:
            con = sqlite3.connect(str(db), timeout=120.0, isolation_level=None)
        elif not db.is_file():
            raise GmosredError(f"{db}: no observing log there (make one with: gmosred obslog RAWDIR)")
        else:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=120.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout = 120000")
        if write:
            _ensure_schema(con)
        else:
            con.execute("SELECT 1 FROM obslog LIMIT 1")
    except sqlite3.DatabaseError as e:
        where = "the folder does not exist" if not db.parent.is_dir() else (
            "the folder is not writable" if write and not os.access(db.parent, os.W_OK) else str(e))
        hint = "; give --db in a folder you can write to" if write else ""
        raise GmosredError(f"{db}: cannot {'write' if write else 'read'} the observing log ({where}){hint}") from None
    return con


def _ensure_schema(con: sqlite3.Connection) -> None:
    cols = ", ".join(f'"{n}" {t}' for n, t in COOKBOOK_COLUMNS + EXTRA_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS obslog ({cols})")
    have = {r[1] for r in con.execute("PRAGMA table_info(obslog)")}
    for name, kind in EXTRA_COLUMNS:  # a log made by the cookbook's obslog.py gains the new columns
        if name not in have:
            con.execute(f'ALTER TABLE obslog ADD COLUMN "{name}" {kind}')
    con.execute("CREATE INDEX IF NOT EXISTS obslog_datetime ON obslog (DateTime)")
    con.execute("CREATE INDEX IF NOT EXISTS obslog_kind ON obslog (ObsType, ObsClass, Filter2)")
    rcols = ", ".join(f'"{n}" {t}' for n, t in REJECTED_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS rejected ({rcols})")


# ------------------------------------------------------------------ one file -> one row
def _text(h, key, default=""):
    v = h.get(key, default) if h is not None else default
    return str(v).strip() if v is not None else default


def _float(h, key, default=None, ndigits=None):
    try:
        v = float(h[key])
    except (KeyError, TypeError, ValueError):
        return default
    return round(v, ndigits) if ndigits is not None else v


def _int(h, key, default=0):
    try:
        return int(h[key])
    except (KeyError, TypeError, ValueError):
        return default


def row_from_headers(scan) -> dict:
    """The obslog row of one file, with the cookbook's conventions; GmosFileError if unusable."""
    phu, ext1, path = scan.phu, scan.ext1, scan.path
    instrument = _text(phu, "INSTRUME")
    if not instrument.startswith("GMOS"):
        raise GmosFileError(path, f"not a GMOS file (INSTRUME={instrument or 'missing'!r})")
    missing = [k for k in ("DATE-OBS", "OBSTYPE") if not _text(phu, k)]
    if missing:
        raise GmosFileError(path, f"primary header has no {' or '.join(missing)} keyword")
    ccdsum = _text(phu, "CCDSUM") or _text(ext1, "CCDSUM")
    try:
        xbin, ybin = (int(v) for v in ccdsum.split())
    except ValueError:
        raise GmosFileError(path, f"no usable CCDSUM in the primary header or extension 1 ({ccdsum!r})") from None
    obstype = _text(phu, "OBSTYPE")
    date, time = _text(phu, "DATE-OBS"), _text(phu, "TIME-OBS") or _text(phu, "UTSTART")
    roi_ys = _int(phu, "DETRO1YS", 0)
    size = roi_ys * ybin
    roi = "CentSp" if size == 1024 else ("Full" if size > 1024 else "Unknown")
    detid = _text(phu, "DETID")
    read_speed = gain_set = None
    try:
        det = instruments.detector_set(detid)
        read_speed = det.read_speed(_float(phu, "AMPINTEG", 0.0))
        gain_set = instruments.gain_setting(_float(ext1, "GAIN", 0.0)) if ext1 is not None else None
    except instruments.UnknownInstrumentError:
        pass
    x1 = _int(phu, "DETRO1X", 1) - 1
    y1 = _int(phu, "DETRO1Y", 1) - 1
    roi_name = instruments.roi_name(x1, x1 + _int(phu, "DETRO1XS", 0) * xbin, y1, y1 + roi_ys * ybin) \
        if "DETRO1XS" in phu else "Unknown"
    masktyp = _int(phu, "MASKTYP", 0)
    dtax = _float(phu, "DTAX", 0.0)
    return {
        "N_ext": scan.n_ext, "File": stem(path) + ".fits", "DateObs": date, "TimeObs": time,
        "Instrument": instrument, "Object": _text(phu, "OBJECT"),
        "RA": _float(phu, "RA", None, 8), "Dec": _float(phu, "DEC", None, 8), "ObsType": obstype,
        "ObsClass": _text(phu, "OBSCLASS") or INFERRED_CLASS.get(obstype),
        "CcdBin": f"{xbin} {ybin}", "RoI": roi, "NodMode": _text(phu, "NODMODE") or "NONE",
        "NS_Shift": _int(phu, "NODPIX", 0), "NS_Cycles": _int(phu, "NODCOUNT", 0),
        "DTA_Xoffset": round(dtax / DTA_MICRON_PER_PIXEL, 3),
        "Filter1": _text(phu, "FILTER1"), "Filter2": _text(phu, "FILTER2"), "Disperser": _text(phu, "GRATING"),
        "AperMask": _text(phu, "MASKNAME"), "MaskType": MASK_TYPES.get(masktyp, str(masktyp)),
        "Rotator": _float(phu, "PA", 0.0, 1), "CentWave": _float(phu, "GRWLEN", 0.0),
        "T_exp": _float(phu, "EXPTIME", 0.0, 2), "Airmass": _float(phu, "AIRMASS", None, 2),
        "Path": str(path.resolve()), "DateTime": f"{date}T{time}" if time else date,
        "DataLabel": _text(phu, "DATALAB"), "ProgramID": _text(phu, "GEMPRGID"), "ObsID": _text(phu, "OBSID"),
        "DetID": detid, "ReadSpeed": read_speed, "GainSetting": gain_set, "RoIName": roi_name,
        "XBin": xbin, "YBin": ybin, "FileSize": scan.size, "MTime": scan.mtime, "Checksum": scan.md5,
    }


def is_focus(row: dict) -> bool:
    """Focus frames (skipped unless asked for)."""
    return row["ObsType"].lower() == "focus" or "focus" in row["Object"].lower()


def _scan_one(args) -> tuple[str, dict | None, str | None]:
    from ..frame.headers import scan_headers

    path, checksum = args
    try:
        return path, row_from_headers(scan_headers(path, checksum=checksum)), None
    except GmosFileError as e:
        return path, None, e.problem


# ------------------------------------------------------------------ indexing a folder
def _raw_files(rawdir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """{File: path} of the readable forms (one per frame) and {File: reason} for duplicate forms."""
    chosen: dict[str, Path] = {}
    duplicates: dict[str, str] = {}
    candidates = sorted((p for p in rawdir.iterdir() if p.is_file() and p.name.lower().endswith(EXTENSIONS)),
                        key=lambda p: (stem(p), FORM_ORDER[next(e for e in EXTENSIONS if p.name.lower().endswith(e))]))
    for p in candidates:
        key = stem(p) + ".fits"
        if key in chosen:
            duplicates[p.name] = f"another form of {chosen[key].name}, which is indexed instead"
        else:
            chosen[key] = p
    return chosen, duplicates


def build(rawdir, db=None, *, include_focus: bool = False, checksum: bool = True, rebuild: bool = False,
          jobs: int | None = None, show_progress: bool | None = None) -> Summary:
    """Index ``rawdir`` into the observing log (default ``rawdir/obsLog.sqlite3``)."""
    from ..progress import progress

    rawdir = Path(rawdir)
    if not rawdir.is_dir():
        raise GmosredError(f"{rawdir}: not a folder")
    db = Path(db) if db else default_db(rawdir)
    con = connect(db)
    summary = Summary()
    try:
        files, duplicates = _raw_files(rawdir)
        known = {r["File"]: (r["FileSize"], r["MTime"], r["Checksum"])
                 for r in con.execute("SELECT File, FileSize, MTime, Checksum FROM obslog")}
        stale_rejects = {r["File"]: r for r in con.execute("SELECT * FROM rejected")}
        todo = []
        for name, path in files.items():
            st = path.stat()
            old = known.get(name) if not rebuild else None
            rej = stale_rejects.get(path.name)
            if old and old[0] == st.st_size and old[1] == st.st_mtime:
                summary.unchanged += 1
            elif rej and not rebuild and (rej["FileSize"], rej["MTime"]) == (st.st_size, st.st_mtime):
                summary.rejected[path.name] = rej["Reason"]  # unchanged since it was rejected
            else:
                todo.append(str(path))
        results = []
        bar = progress(total=len(todo), desc="obslog", enabled=show_progress if todo else False)
        jobs = jobs or os.cpu_count() or 1
        if jobs > 1 and len(todo) > 16:
            with ProcessPoolExecutor(min(jobs, len(todo) // 8 + 1)) as pool:
                for res in pool.map(_scan_one, [(p, checksum) for p in todo], chunksize=8):
                    results.append(res)
                    bar.update()
        else:
            for p in todo:
                results.append(_scan_one((p, checksum)))
                bar.update()
        bar.close()
        try:
            _write(con, rawdir, files, duplicates, results, summary, include_focus, rebuild)
        except sqlite3.DatabaseError as e:
            raise GmosredError(f"{db}: cannot write the observing log ({e}); give --db in a folder you can "
                               "write to") from None
    finally:
        con.close()
    return summary


def _write(con, rawdir, files, duplicates, results, summary, include_focus, rebuild) -> None:
    names = [n for n, _ in COOKBOOK_COLUMNS[2:] + EXTRA_COLUMNS]
    updates = ", ".join(f'"{n}"=excluded."{n}"' for n in names if n != "File")
    upsert = (f'INSERT INTO obslog ({", ".join(chr(34) + n + chr(34) for n in names)}) '
              f'VALUES ({", ".join(":" + n for n in names)}) ON CONFLICT(File) DO UPDATE SET {updates}')
    con.execute("BEGIN IMMEDIATE")
    try:
        if rebuild:
            keep = {r["File"]: r["use_me"] for r in con.execute("SELECT File, use_me FROM obslog")}
            con.execute("DELETE FROM obslog")
            con.execute("DELETE FROM rejected")
        else:
            keep = {}
        present = {r["File"]: r["Checksum"] for r in con.execute("SELECT File, Checksum FROM obslog")}
        for path, row, problem in results:
            p = Path(path)
            if problem is not None:
                summary.rejected[p.name] = problem
                st = p.stat()
                con.execute("INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?)",
                            (p.name, str(p.resolve()), problem, st.st_size, st.st_mtime))
                con.execute("DELETE FROM obslog WHERE File = ?", (stem(p) + ".fits",))
                continue
            con.execute("DELETE FROM rejected WHERE File = ?", (p.name,))
            if is_focus(row) and not include_focus:
                con.execute("DELETE FROM obslog WHERE File = ?", (row["File"],))
                continue
            name = row["File"]
            if name in present and row["Checksum"] and row["Checksum"] == present[name]:
                con.execute("UPDATE obslog SET MTime = ?, Path = ? WHERE File = ?", (row["MTime"], row["Path"], name))
                summary.unchanged += 1
                continue
            (summary.updated if name in present else summary.added).append(name)
            con.execute(upsert, row)
            if name in keep:
                con.execute("UPDATE obslog SET use_me = ? WHERE File = ?", (keep[name], name))
        for name, reason in duplicates.items():
            summary.rejected[name] = reason
            p = rawdir / name
            st = p.stat()
            con.execute("INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?)",
                        (name, str(p.resolve()), reason, st.st_size, st.st_mtime))
        gone = [r["File"] for r in con.execute("SELECT File FROM obslog") if r["File"] not in files]
        for name in gone:
            con.execute("DELETE FROM obslog WHERE File = ?", (name,))
        summary.removed.extend(gone)
        on_disk = {p.name for p in files.values()} | set(duplicates)
        for r in list(con.execute("SELECT File FROM rejected")):
            if r["File"] not in on_disk:
                con.execute("DELETE FROM rejected WHERE File = ?", (r["File"],))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


# ------------------------------------------------------------------ editing and showing
def set_use(db, files: list[str], use: bool) -> list[str]:
    """Set ``use_me`` for the given files (names with or without .fits, or paths); returns unknown names."""
    con = connect(db)
    unknown = []
    try:
        con.execute("BEGIN IMMEDIATE")
        for f in files:
            name = stem(f) + ".fits"
            if con.execute("UPDATE obslog SET use_me = ? WHERE File = ?", (int(use), name)).rowcount == 0:
                unknown.append(f)
        con.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        raise GmosredError(f"{db}: cannot write the observing log ({e}); give --db in a folder you can "
                           "write to") from None
    finally:
        con.close()
    return unknown


def summary_table(db) -> list[dict]:
    """One line per kind of frame: class, type, object, filter, binning, ROI, count, dates, exposure times."""
    con = connect(db, write=False)
    try:
        rows = con.execute(
            "SELECT ObsClass, ObsType, Object, Filter2, CcdBin, RoI, COUNT(*) AS N, SUM(use_me) AS Used, "
            "MIN(DateObs) AS First, MAX(DateObs) AS Last, GROUP_CONCAT(DISTINCT T_exp) AS Exposures "
            "FROM obslog GROUP BY ObsClass, ObsType, Object, Filter2, CcdBin, RoI "
            "ORDER BY ObsClass, ObsType, Object, Filter2").fetchall()
        return [dict(r) for r in rows]
    finally:
        con.close()


def rejected(db) -> list[dict]:
    con = connect(db, write=False)
    try:
        return [dict(r) for r in con.execute("SELECT File, Reason FROM rejected ORDER BY File")]
    finally:
        con.close()
