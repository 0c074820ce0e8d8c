"""Which calibration fits which frame, as data (``data/criteria.csv``, ``data/calibrations.csv``).

One table says what each kind of calibration must share with the frames it calibrates (bias:
instrument, detector, binning, ROI, read speed, gain setting; flat and fringe: the same and the filter)
and within how many days; another says where each criterion's value is read (the observing log's
column, a file's header, the archive's listing). The pipeline's plan groups frames by these keys, each
step checks its calibrations against its frame with :func:`check`, and the archive association asks
for the same criteria. A mismatch names the criterion, both files and both values.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import GmosredError


@dataclass(frozen=True)
class Criterion:
    name: str
    obslog: str  # column of the observing log
    header: str  # PHU keyword, or a descriptor of RawFrame / a processed frame
    archive: str  # field of the archive's listing ('' if it has none)
    what: str


@dataclass(frozen=True)
class Calibration:
    kind: str
    criteria: tuple[Criterion, ...]
    max_days: float | None


def _rows(name: str) -> list[dict]:
    with (resources.files(__package__) / "data" / name).open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@lru_cache(maxsize=1)
def criteria() -> dict[str, Criterion]:
    return {r["criterion"]: Criterion(r["criterion"], r["obslog"], r["header"], r["archive"], r["what"])
            for r in _rows("criteria.csv")}


@lru_cache(maxsize=1)
def calibrations() -> dict[str, Calibration]:
    known = criteria()
    out = {}
    for r in _rows("calibrations.csv"):
        try:
            crit = tuple(known[c] for c in r["criteria"].split())
        except KeyError as e:
            raise GmosredError(f"calibrations.csv: {r['calibration']}: unknown criterion {e}") from None
        out[r["calibration"]] = Calibration(r["calibration"], crit, float(r["max_days"]) if r["max_days"] else None)
    return out


def calibration(kind: str) -> Calibration:
    try:
        return calibrations()[kind]
    except KeyError:
        raise GmosredError(f"no matching rules for calibrations of kind {kind!r}; known: "
                           f"{', '.join(calibrations())}") from None


def band(filter2: str) -> str:
    """The observing log's Filter2 ('r_G0326') as the band it is matched by ('r')."""
    return str(filter2 or "").split("_")[0]


def log_key(row: dict, kind: str) -> tuple:
    """The values of an observing-log row that a calibration of ``kind`` must share."""
    return tuple(_log_value(row, c) for c in calibration(kind).criteria)


def _log_value(row: dict, c: Criterion):
    value = row.get(c.obslog)
    if c.name == "roi":
        value = row.get("RoIName") or row.get("RoI")
    if c.name == "filter":
        value = band(value)
    return "?" if value in (None, "") else value


def file_values(f, kind: str) -> dict[str, str]:
    """{criterion: value} of a file (a RawFrame, or a processed Frame: from its PHU and first plane)."""
    from ..frame.model import filter_name, roi_of
    from ..frame.sections import parse_binning

    out = {}
    for c in calibration(kind).criteria:
        if hasattr(f, c.header):  # a RawFrame descriptor
            value = getattr(f, c.header)
        elif c.header == "binning":
            value = parse_binning(f.planes[0].header["CCDSUM"])
        elif c.header == "filter":
            value = filter_name(f.phu)
        elif c.header == "roi":
            value = roi_of(f.phu, parse_binning(f.planes[0].header["CCDSUM"]))
        elif c.header in ("read_speed", "gain_setting"):
            value = f.phu.get({"read_speed": "RDSPEED", "gain_setting": "GAINSET"}[c.header])
        else:
            value = f.phu.get(c.header)
        if isinstance(value, tuple):
            value = "x".join(map(str, value))
        out[c.name] = "?" if value is None else str(value).strip()
    return out


def check(kind: str, cal, cal_name, frame, frame_name) -> None:
    """Raise naming the criterion, both files and both values if calibration ``cal`` does not fit ``frame``.
    A value a processed file does not record ('?') is not held against it."""
    a, b = file_values(cal, kind), file_values(frame, kind)
    bad = [c for c in a if a[c] != b[c] and "?" not in (a[c], b[c])]
    if bad:
        what = "; ".join(f"{criteria()[c].what}: {a[c]} in {cal_name}, {b[c]} in {frame_name}" for c in bad)
        raise GmosredError(f"{kind} {cal_name} does not fit {frame_name}: {what}")


def values(kind: str, key: tuple) -> dict:
    """{criterion: value} of a key made by :func:`log_key`."""
    return dict(zip((c.name for c in calibration(kind).criteria), key))


def describe(kind: str, key: tuple) -> str:
    return ", ".join(f"{name} {v}" for name, v in values(kind, key).items())
