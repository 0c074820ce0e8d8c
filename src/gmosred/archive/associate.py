"""What to fetch: the selected frames and the calibrations the archive associates with them.

The archive's "Load Associated Calibrations" applies its calibration manager's GMOS rules
(``data/calibration_rules.csv``): for each frame, the nearest biases with the same instrument,
binning, read speed, gain and ROI within 90 days, the nearest twilight flats that also share the
filter within 180 days, and photometric standards of the same night. gmosred applies the same
rules to the archive's listings, so the user sees each calibration's reason before fetching.
"""
from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from importlib import resources

from ..errors import GmosredError
from .client import Archive, ArchiveFile


@dataclass(frozen=True)
class Rule:
    kind: str
    observation_type: str
    observation_class: str
    object: str
    match: tuple[str, ...]
    max_days: float
    how_many: int
    requires: tuple[str, ...]

    def search_terms(self) -> dict:
        terms = {"observation_type": self.observation_type}
        if self.observation_class:
            terms["observation_class"] = self.observation_class
        if self.object:
            terms["object"] = self.object
        return terms

    def accepts(self, cal: ArchiveFile) -> bool:
        """The calibration is of this rule's kind (whatever the archive's search returned)."""
        ok = cal.observation_type == self.observation_type
        ok &= not self.observation_class or cal.observation_class == self.observation_class
        ok &= not self.object or cal.object == self.object
        if not self.object and self.observation_type == "OBJECT":
            ok &= cal.object != "Twilight"
        ok &= "phot_standard" not in self.requires or cal.phot_standard
        ok &= "cal_program" not in self.requires or "-CAL" in cal.program_id
        return ok


@lru_cache(maxsize=1)
def rules() -> tuple[Rule, ...]:
    """The association rules, from the packaged table."""
    with (resources.files(__package__) / "data" / "calibration_rules.csv").open(newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    return tuple(Rule(r["kind"], r["observation_type"], r["observation_class"], r["object"],
                      tuple(r["match"].split()), float(r["max_days"]), int(r["how_many"]),
                      tuple(r["requires"].split())) for r in rows)


def needs(frame: ArchiveFile, kind: str) -> bool:
    """Whether the archive associates calibrations of ``kind`` with ``frame`` (its 'applicable' rules)."""
    if frame.observation_class in ("acq", "acqCal"):
        return False
    if kind == "bias":
        return frame.observation_type not in ("BIAS", "ARC") and frame.roi != "Central Stamp"
    imaging_object = (frame.observation_type == "OBJECT" and frame.object != "Twilight"
                      and frame.focal_plane_mask in ("Imaging", ""))
    if kind == "twilight flat":
        return imaging_object
    if kind == "standard":
        return imaging_object and frame.observation_class == "science"
    return False


@dataclass
class Selection:
    """Files to fetch, each with why it is wanted, and notes on calibrations not found."""

    files: dict[str, ArchiveFile] = field(default_factory=dict)  # by filename, in the order found
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, f: ArchiveFile, reason: str) -> None:
        if f.filename not in self.files:
            self.files[f.filename] = f
            self.reasons[f.filename] = reason


def parse_dates(text: str | None) -> tuple[date, date] | None:
    """UT dates, inclusive, as everywhere in gmosred: 'YYYY-MM-DD' or 'YYYY-MM-DD:YYYY-MM-DD' (the
    archive's own '20061231' and '20061230-20070102' are read too) -> (first, last)."""
    if not text:
        return None
    usage = "give YYYY-MM-DD or YYYY-MM-DD:YYYY-MM-DD (first date first)"
    parts = text.split(":") if "-" in text[:8] or ":" in text else text.split("-")
    try:
        days = [date.fromisoformat(p) if "-" in p else datetime.strptime(p, "%Y%m%d").date() for p in parts]
    except ValueError:
        raise GmosredError(f"--dates {text!r}: {usage}") from None
    if len(days) not in (1, 2) or days[0] > days[-1]:
        raise GmosredError(f"--dates {text!r}: {usage}")
    return days[0], days[-1]


def select(archive: Archive, program: str, *, filters=(), obj: str | None = None,
           dates: tuple[date, date] | None = None, calibrations: bool = False) -> Selection:
    """The program's raw files matching the criteria, plus (optionally) their calibrations."""
    criteria = {"program_id": program}
    if dates:
        criteria["utc_date"] = dates
    if obj:
        criteria["object"] = obj  # the archive's target-name search ('*' wildcards)
    found = archive.search(**criteria)
    wanted = [f for f in found
              if (not filters or any(b in filters for b in f.bands))
              and (not obj or fnmatch.fnmatchcase(f.object, obj))]
    sel = Selection()
    for f in sorted(wanted, key=lambda f: (f.ut_datetime or datetime.min, f.name)):
        sel.add(f, f.kind)
    if not wanted:
        asked = " and ".join(a for a in (f"filter {'/'.join(filters)}" if filters else "",
                                         f"object {obj!r}" if obj else "",
                                         f"UT dates {dates[0]:%Y%m%d}-{dates[1]:%Y%m%d}" if dates else "") if a)
        sel.notes.append(f"none of the {len(found)} raw files of {program} has {asked}" if found else
                         f"the archive lists no raw files of {program}" + (f" with {asked}" if asked else ""))
    if calibrations:
        for rule in rules():
            associate(archive, list(sel.files.values()), rule, sel)
    return sel


def _key(f: ArchiveFile, fields) -> tuple:
    return tuple(getattr(f, name) for name in fields)


def associate(archive: Archive, frames: list[ArchiveFile], rule: Rule, sel: Selection) -> None:
    """Add to ``sel`` the calibrations of one kind for ``frames``, by ``rule``."""
    targets = [f for f in frames if needs(f, rule.kind) and f.ut_datetime is not None]
    groups: dict[tuple, list[ArchiveFile]] = {}
    for f in targets:
        groups.setdefault(_key(f, rule.match), []).append(f)
    window = timedelta(days=rule.max_days)
    for key, members in groups.items():
        first = min(f.ut_datetime for f in members) - window
        last = max(f.ut_datetime for f in members) + window
        terms = [members[0].binning] if members[0].binning else []
        candidates = [c for c in archive.search(*terms, instrument=members[0].instrument,
                                                utc_date=(first.date(), last.date()), **rule.search_terms())
                      if rule.accepts(c) and c.ut_datetime is not None and _key(c, rule.match) == key]
        setup = ", ".join(f"{v}" for v in key if v)
        if not candidates:
            sel.notes.append(f"no {rule.kind} within {rule.max_days:g} day{'s' if rule.max_days != 1 else ''} "
                             f"of the frames for {setup}")
            continue
        for f in members:
            near = sorted((abs(c.ut_datetime - f.ut_datetime), c.name, c) for c in candidates)
            for dt, _, c in near[:rule.how_many]:
                if dt <= window:
                    sel.add(c, f"{rule.kind} for {f.band} {f.binning}" if rule.kind != "bias"
                            else f"bias for {f.binning} {f.read_speed}/{f.gain}")
