"""Retrieving a program's raw data and its calibrations from the Gemini Observatory Archive.

``gmosred download PROGRAM --raw raw/`` does the cookbook's first step in one command: search
(:mod:`.client`, through astroquery), add the associated calibrations (:mod:`.associate`), show
what will be fetched, fetch it (:mod:`.fetch`) and index the folder into the observing log.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .associate import Selection, parse_dates, select
from .client import DEFAULT_ARCHIVE, Archive, ArchiveError, ArchiveFile
from .fetch import DECOMPRESSED, FETCHED, PRESENT, REPLACED, Outcome, fetch_all, local_state

__all__ = ["Archive", "ArchiveError", "ArchiveFile", "DEFAULT_ARCHIVE", "Outcome", "Plan", "fetch_all",
           "parse_dates", "plan", "select"]


@dataclass
class Plan:
    """A selection and what each file's local copy looks like."""

    selection: Selection
    state: dict[str, str]  # filename -> 'missing' / 'present' / 'different'
    today: date

    @property
    def files(self) -> list[ArchiveFile]:
        return list(self.selection.files.values())

    def to_fetch(self) -> list[ArchiveFile]:
        return [f for f in self.files if self.state[f.filename] not in ("present", "stored")]

    def status(self, f: ArchiveFile) -> str:
        state = self.state[f.filename]
        if state == "present":
            return "present"
        if state == "stored":
            return "present as .bz2"
        if f.proprietary(self.today):
            return f"proprietary until {f.release:%Y-%m-%d}"
        return "differs locally" if state == "different" else "to fetch"

    def file_rows(self) -> list[dict]:
        return [{"file": f.filename, "type": f.kind, "object": f.object, "filter": _band(f), "binning": f.binning,
                 "UT": f"{f.ut_datetime:%Y-%m-%d %H:%M}" if f.ut_datetime else "", "MB": _mb(f.file_size),
                 "status": self.status(f), "why": self.selection.reasons[f.filename]} for f in self.files]

    def summary_rows(self) -> list[dict]:
        """One row per (type, filter, binning): files, date range, size, how many to fetch."""
        groups: dict[tuple, list[ArchiveFile]] = {}
        for f in self.files:
            groups.setdefault((f.kind, _band(f), f.binning), []).append(f)
        rows = []
        for (kind, band, binning), members in groups.items():
            dates = sorted(f.ut_datetime.date() for f in members if f.ut_datetime)
            todo = [f for f in members if self.state[f.filename] not in ("present", "stored")]
            rows.append({"type": kind, "filter": band, "binning": binning, "files": len(members),
                         "dates": f"{dates[0]:%Y%m%d}-{dates[-1]:%Y%m%d}" if dates else "",
                         "MB": _mb(sum(f.file_size or 0 for f in members)), "to fetch": len(todo),
                         "MB to fetch": _mb(sum(f.file_size or 0 for f in todo))})
        return rows


def _band(f: ArchiveFile) -> str:
    """The filter column: blank for frames taken without light."""
    return "" if f.kind in ("bias", "dark") else f.band


def _mb(n) -> str:
    return "" if n is None else f"{n / 1e6:.1f}"


def plan(archive: Archive, program: str, rawdir, *, filters=(), obj=None, dates=None,
         calibrations=False, keep_compressed=False, today: date | None = None) -> Plan:
    """Search the archive and compare with what ``rawdir`` already holds."""
    sel = select(archive, program, filters=filters, obj=obj, dates=dates, calibrations=calibrations)
    rawdir = Path(rawdir)
    state = {name: local_state(f, rawdir, keep_compressed) for name, f in sel.files.items()}
    return Plan(sel, state, today or date.today())


def count(outcomes: list[Outcome]) -> Counter:
    return Counter(o.status for o in outcomes)


def arrived(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status in (FETCHED, PRESENT, DECOMPRESSED, REPLACED)]
