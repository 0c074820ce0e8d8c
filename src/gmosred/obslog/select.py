"""File selection from the observing log: the cookbook's fileSelect.py templates, done safely.

Each kind of file list is a list of conditions, as in the cookbook's SQL templates; conditions that
take a value are applied only when the value is given. Values only ever reach SQL as bound
parameters. Dates follow the cookbook: 'YYYY-MM-DD:YYYY-MM-DD' is an inclusive range, a value with
'*' or '?' a GLOB pattern, 'None' no condition, anything else equality.
"""
from __future__ import annotations

import datetime
import re

from dataclasses import dataclass

from ..errors import GmosredError


@dataclass(frozen=True)
class Cond:
    """``column op value``: a literal value, or the named parameter ``param`` when ``value`` is None."""

    column: str
    op: str
    value: str | None = None
    param: str | None = None

    def sql(self) -> str:
        rhs = f"'{self.value}'" if self.value is not None else f":{self.param}"
        return f"{self.column} {self.op} {rhs}" if self.op == "LIKE" else f"{self.column}{self.op}{rhs}"


def _p(column: str, op: str = "=") -> Cond:
    return Cond(column, op, param=column)


_SETUP = [_p("Instrument"), _p("RoI"), _p("CcdBin")]
_SPECTRO = [_p("AperMask"), _p("Disperser", "LIKE"), _p("CentWave")]
_IMAGING = [Cond("Disperser", "=", "MIRROR"), Cond("AperMask", "=", "None")]
_CAL = Cond("ObsClass", "LIKE", "%Cal")

#: The cookbook's templates (fileSelect.py), by its names; std also takes a filter for imaging.
KINDS: dict[str, list[Cond]] = {
    "bias": [Cond("ObsType", "=", "BIAS"), _CAL, *_SETUP],
    "dark": [Cond("ObsType", "=", "DARK"), _CAL, *_SETUP],
    "twiFlat": [Cond("ObsClass", "=", "dayCal"), Cond("Object", "=", "Twilight"), *_SETUP, *_IMAGING,
                _p("Filter2", "LIKE")],
    "gcalFlat": [Cond("ObsType", "=", "FLAT"), _CAL, *_SETUP, *_SPECTRO],
    "arc": [Cond("ObsType", "=", "ARC"), _CAL, *_SETUP, *_SPECTRO],
    "std": [Cond("ObsType", "=", "OBJECT"), _CAL, *_SETUP, *_SPECTRO, _p("Filter2", "LIKE")],
    "sciImg": [Cond("ObsType", "=", "OBJECT"), Cond("ObsClass", "=", "science"), _p("Object", "LIKE"), *_SETUP,
               *_IMAGING, _p("Filter2", "LIKE")],
}


def filter_pattern(value: str) -> str:
    """'Ha' -> 'Ha_G%' (the cookbook's rule; LIKE's '_' is one character, so HaC does not match)."""
    if "%" in value or "_" in value:
        return value
    return value + "%" if value.lower().startswith("open") else value + "_G%"


def disperser_pattern(value: str) -> str:
    if "%" in value or "_" in value or value == "MIRROR":
        return value
    return value + "+_%"


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_GLOB = re.compile(r"[0-9*?\[\]-]+")


def check_dates(dates: str) -> None:
    """Raise unless ``dates`` is YYYY-MM-DD, YYYY-MM-DD:YYYY-MM-DD (real dates) or a GLOB pattern of one."""
    parts = dates.split(":")
    ok = len(parts) in (1, 2)
    for part in parts if ok else ():
        if _DATE.fullmatch(part):
            try:
                datetime.date.fromisoformat(part)
            except ValueError:
                ok = False
        elif len(parts) == 2 or not _DATE_GLOB.fullmatch(part) or not ("*" in part or "?" in part or "[" in part):
            ok = False
    if not ok:
        raise GmosredError(f"date selection {dates!r}: use YYYY-MM-DD, YYYY-MM-DD:YYYY-MM-DD or a GLOB "
                           "pattern such as 2006-09-*")


def date_condition(dates: str | None, params: dict) -> str:
    """The cookbook's DateObs clause for 'd1:d2', a GLOB pattern, 'None' or one date."""
    if not dates or dates == "None":
        return ""
    check_dates(dates)
    parts = dates.split(":")
    if len(parts) == 2:
        params["date1"], params["date2"] = parts
        return "DateObs>=:date1 AND DateObs<=:date2"
    if len(parts) != 1:
        raise GmosredError(f"date selection {dates!r}: use YYYY-MM-DD, YYYY-MM-DD:YYYY-MM-DD or a GLOB pattern")
    params["DateObs"] = dates
    return "DateObs GLOB :DateObs" if ("*" in dates or "?" in dates) else "DateObs=:DateObs"


def _conditions(kind: str, criteria: dict) -> tuple[list[tuple[str, Cond | None]], dict]:
    """(sql, condition) pairs in template order, with the parameters given."""
    if kind not in KINDS:
        raise GmosredError(f"unknown kind of file list {kind!r}; choose from {', '.join(KINDS)}")
    params = {}
    accepted = {c.param for c in KINDS[kind] if c.param}
    given = {k: v for k, v in criteria.items() if v is not None and k != "DateObs"}
    extra = set(given) - accepted
    if extra:
        raise GmosredError(f"{kind} files are not selected by {', '.join(sorted(extra))}")
    out: list[tuple[str, Cond | None]] = [("use_me=1", None)]
    for cond in KINDS[kind]:
        if cond.param is None:
            out.append((cond.sql(), cond))
        elif cond.param in given:
            value = given[cond.param]
            if cond.param == "Filter2":
                value = filter_pattern(value)
            elif cond.param == "Disperser":
                value = disperser_pattern(value)
            params[cond.param] = value
            out.append((cond.sql(), cond))
    date_sql = date_condition(criteria.get("DateObs"), params)
    if date_sql:
        out.append((date_sql, Cond("DateObs", "range")))
    return out, params


def build_query(kind: str, **criteria) -> tuple[str, dict]:
    """SQL text and parameters for a kind of file list.

    Criteria use the cookbook's names: Instrument, RoI, CcdBin, Filter2, Object, DateObs,
    AperMask, Disperser, CentWave.
    """
    conds, params = _conditions(kind, criteria)
    return "SELECT File, Path FROM obslog WHERE " + " AND ".join(sql for sql, _ in conds) + " ORDER BY File", params


def select(db, kind: str, **criteria) -> list[dict]:
    """Matching rows (File, Path), sorted by file name."""
    from .index import connect

    sql, params = build_query(kind, **criteria)
    con = connect(db, write=False)
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def explain_empty(db, kind: str, **criteria) -> str:
    """Which condition removed the last candidate files, and what values the log has there."""
    from .index import connect

    conds, params = _conditions(kind, criteria)
    con = connect(db, write=False)
    try:
        total = con.execute("SELECT COUNT(*) FROM obslog").fetchone()[0]
        if total == 0:
            return "the observing log is empty"
        for k in range(len(conds)):
            where = " AND ".join(sql for sql, _ in conds[: k + 1])
            n = con.execute(f"SELECT COUNT(*) FROM obslog WHERE {where}", params).fetchone()[0]
            if n:
                continue
            sql, cond = conds[k]
            before = " AND ".join(s for s, _ in conds[:k]) or "(no condition)"
            m = con.execute(f"SELECT COUNT(*) FROM obslog WHERE {before if k else '1'}", params).fetchone()[0]
            if cond is None:
                return f"all {total} files in the log have use_me=0"
            shown = sql
            for name, value in params.items():
                shown = shown.replace(f":{name}", repr(value))
            values = [r[0] for r in con.execute(
                f"SELECT DISTINCT {cond.column} FROM obslog WHERE {before if k else '1'} ORDER BY 1 LIMIT 12", params)]
            return (f"{m} file(s) pass {before}, but none has {shown}; "
                    f"{cond.column} values there: {', '.join(repr(v) for v in values)}")
        return "the selection is not empty"
    finally:
        con.close()
