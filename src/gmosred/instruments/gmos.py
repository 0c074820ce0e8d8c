"""GMOS instrument facts, read from the packaged tables in ``data/``.

Every number the pipeline uses about the instrument comes from these tables
(gathered from Gemini's public lookup tables and real headers); code never
branches on a detector name. Look-ups that find nothing raise
:class:`UnknownInstrumentError` with a message saying what was asked for.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..errors import GmosredError

DATA = resources.files(__package__) / "data"


class UnknownInstrumentError(GmosredError):
    """A detector, amplifier, filter or setting that the tables do not know."""


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- amplifiers
@dataclass(frozen=True)
class Amplifier:
    """Gain (e-/ADU), read noise (e-) and typical bias level (ADU) of one amplifier."""

    ampname: str
    read_speed: str
    gain_setting: str
    gain: float
    read_noise: float
    bias_level: float
    valid_from: str
    valid_before: str


@cache
def _amplifier_table() -> list[Amplifier]:
    return [
        Amplifier(r["ampname"], r["read_speed"], r["gain_setting"], float(r["gain_e_per_adu"]),
                  float(r["read_noise_e"]), float(r["bias_level_adu"]),
                  r["valid_from_utdate"], r["valid_before_utdate"])
        for r in _rows("amplifiers.csv")
    ]


def _isodate(date) -> str:
    if isinstance(date, (_dt.date, _dt.datetime)):
        return date.strftime("%Y-%m-%d")
    return str(date)[:10]


def amplifier(ampname: str, date, read_speed: str, gain_setting: str) -> Amplifier:
    """Amplifier properties in force on UT ``date`` (epochs: from inclusive, before exclusive)."""
    day = _isodate(date)
    for amp in _amplifier_table():
        if (amp.ampname == ampname and amp.read_speed == read_speed
                and amp.gain_setting == gain_setting
                and (not amp.valid_from or amp.valid_from <= day)
                and (not amp.valid_before or day < amp.valid_before)):
            return amp
    known = {a.ampname for a in _amplifier_table()}
    if ampname not in known:
        raise UnknownInstrumentError(f"unknown GMOS amplifier {ampname!r}")
    raise UnknownInstrumentError(
        f"no gain/read-noise entry for amplifier {ampname!r} on {day} "
        f"({read_speed} read, {gain_setting} gain)")


# ---------------------------------------------------------------- detector sets
@dataclass(frozen=True)
class CCDPlacement:
    """Where one CCD sits in the mosaic, relative to CCD2 (unbinned pixels, degrees CCW)."""

    detsec_x0: int
    shift_x: float
    shift_y: float
    rotation_deg: float

    def to_ccd2_affine(self, shape_unbinned: tuple[int, int], binning: tuple[int, int]):
        """2x3 matrix mapping this CCD's binned pixel (x, y) to CCD2's binned pixel frame.

        Pixel coordinates are 0-based at pixel centres, over the full CCD
        (ROI offsets are the caller's). The CCD is rotated by ``rotation_deg``
        counter-clockwise about its centre, then its centre is placed at
        ``(shift_x, shift_y)`` from CCD2's centre.
        """
        import numpy as np

        bx, by = binning
        ny, nx = shape_unbinned
        c = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
        t = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        to_unbinned = np.array([[bx, 0.0], [0.0, by]])
        off = np.array([(bx - 1) / 2.0, (by - 1) / 2.0])
        # unbinned U = B*b + off; focal F = R (U - c) + c + shift; binned F_b = (F - off) / b
        lin = np.linalg.inv(to_unbinned) @ rot @ to_unbinned
        const = np.linalg.inv(to_unbinned) @ (rot @ (off - c) + c + np.array([self.shift_x, self.shift_y]) - off)
        return np.hstack([lin, const[:, None]])


@dataclass(frozen=True)
class DetectorSet:
    """One GMOS detector set (three CCDs), identified by the PHU ``DETID``."""

    detid: str
    instrument: str
    family: str  # EEV, e2v DD, Hamamatsu
    dettype: str
    ccd_shape: tuple[int, int]  # unbinned (ny, nx) of one CCD's data
    gap: int  # tile gap between CCDs, unbinned pixels
    placements: tuple[CCDPlacement, ...]  # CCD1, CCD2, CCD3
    pixel_scale: float  # arcsec per unbinned pixel
    slow_read_ampinteg_above: int
    overscan_contaminated_columns: int | None
    bottom_rows: int  # unbinned rows at the bottom of each CCD that Gemini IRAF trims (Hamamatsu: 48)
    ccd_names: tuple[str, str, str]  # CCDNAME of CCD1..3

    def read_speed(self, ampinteg: float) -> str:
        """'slow' or 'fast' from the PHU ``AMPINTEG``."""
        return "slow" if ampinteg > self.slow_read_ampinteg_above else "fast"


def gain_setting(raw_gain: float) -> str:
    """'low' or 'high' gain from a raw extension's (stale) ``GAIN`` value."""
    return "low" if raw_gain < 3 else "high"


@cache
def _detector_sets() -> dict[str, DetectorSet]:
    geometry: dict[str, list[dict]] = {}
    for r in _rows("mosaic_geometry.csv"):
        geometry.setdefault(r["detid"], []).append(r)
    scales = {(r["instrument"], r["dettype"]): float(r["arcsec_per_unbinned_pixel"])
              for r in _rows("pixel_scales.csv")}
    sets = {}
    for d in _rows("detectors.csv"):
        g = sorted(geometry[d["detid"]], key=lambda r: int(r["ccd_detsec_origin_x_unbinned"]))
        placements = tuple(
            CCDPlacement(int(r["ccd_detsec_origin_x_unbinned"]), float(r["shift_x_unbinned"]),
                         float(r["shift_y_unbinned"]), float(r["rotation_deg_ccw"]))
            for r in g)
        contam = d["overscan_contaminated_columns"]
        sets[d["detid"]] = DetectorSet(
            detid=d["detid"], instrument=d["instrument"], family=d["family"], dettype=d["dettype"],
            ccd_shape=(int(g[0]["shape_y"]), int(g[0]["shape_x"])), gap=int(g[0]["tile_gap_unbinned"]),
            placements=placements, pixel_scale=scales[(d["instrument"], d["dettype"])],
            slow_read_ampinteg_above=int(d["slow_read_ampinteg_above"]),
            overscan_contaminated_columns=int(contam) if contam else None,
            bottom_rows=int(d["bottom_rows_unbinned"] or 0),
            ccd_names=tuple(d["ccd_names"].split(";")))
    return sets


def detector_set(detid: str) -> DetectorSet:
    """The detector set for a PHU ``DETID`` (surrounding blanks ignored)."""
    try:
        return _detector_sets()[detid.strip()]
    except KeyError:
        raise UnknownInstrumentError(
            f"unknown GMOS DETID {detid!r}; known: {', '.join(sorted(_detector_sets()))}") from None


def detector_sets() -> list[DetectorSet]:
    """Every detector set in the tables."""
    return list(_detector_sets().values())


# ---------------------------------------------------------------- other facts
@cache
def _zeropoints() -> dict[tuple[str, str], float]:
    return {(r["detector"], r["filter"]): float(r["zeropoint_mag"]) for r in _rows("nominal_zeropoints.csv")}


def filter_band(filter_name: str) -> str:
    """Band name from a FILTER keyword: 'r_G0326' -> 'r', 'Ha_G0336' -> 'Ha'."""
    return filter_name.strip().split("_")[0]


@cache
def _fringing() -> dict[tuple[str, str], bool]:
    return {(r["family"], r["filter"]): r["fringes"] == "yes" for r in _rows("fringing.csv")}


def fringes(family: str, filter_name: str) -> bool:
    """Whether a detector family (EEV, e2v DD, Hamamatsu) fringes enough in a filter for the fringe to be removed
    (the table is DRAGONS' rule); a filter the table does not name does not."""
    if family not in {f for f, _ in _fringing()}:
        raise UnknownInstrumentError(f"no fringing facts for detector family {family!r}")
    return _fringing().get((family, filter_band(filter_name)), False)


def nominal_zeropoint(detector: str, filter_name: str) -> float:
    """Nominal zero point (mag for 1 e-/s) for a DETID or CCD name and a filter."""
    key = (detector.strip(), filter_band(filter_name))
    try:
        return _zeropoints()[key]
    except KeyError:
        raise UnknownInstrumentError(f"no nominal zero point for {key[0]!r} in filter {key[1]!r}") from None


@cache
def _full_wells() -> dict[tuple[str, str], float]:
    return {(r["detector"], r["ampname"]): float(r["full_well_e"]) for r in _rows("full_well.csv")}


def full_well(detector: str, ampname: str) -> float | None:
    """Full-well level (e-) for a PHU ``DETECTOR`` and amplifier; None where the ADC limits (EEV)."""
    return _full_wells().get((detector.strip(), ampname))


@dataclass(frozen=True)
class NamedROI:
    name: str
    x1: int  # unbinned, 0-based, end exclusive
    x2: int
    y1: int
    y2: int


@cache
def named_rois() -> list[NamedROI]:
    """Named regions of interest (Full Frame, CCD2, Central Spectrum, Central Stamp)."""
    return [NamedROI(r["roi_name"], int(r["x1_0based"]), int(r["x2"]), int(r["y1_0based"]), int(r["y2"]))
            for r in _rows("roi_settings.csv")]


def roi_name(x1: int, x2: int, y1: int, y2: int) -> str:
    """Name of the ROI covering unbinned detector pixels [x1:x2, y1:y2) (0-based), or 'Custom'."""
    for roi in named_rois():
        if (roi.x1, roi.x2, roi.y1, roi.y2) == (x1, x2, y1, y2):
            return roi.name
    return "Custom"


@cache
def filter_wavelengths() -> dict[str, float]:
    """Central wavelength (micron) of the filters not in the standard set."""
    return {r["key"]: float(r["value"]) for r in _rows("filter_wavelengths.csv")}


@dataclass(frozen=True)
class StaticMask:
    """One packaged static mask (``data/masks.csv``): Gemini's BPM (bad pixels) or illumination mask
    (unilluminated pixels) of a detector set at one binning. Valid dates are optional (blank: always)."""

    file: str
    kind: str  # 'bpm' or 'illum'
    instrument: str
    detid: str
    binning: tuple[int, int]
    version: int
    valid_from: str
    valid_before: str

    @property
    def path(self):
        return DATA / "masks" / self.file


@cache
def static_masks() -> list[StaticMask]:
    """Every packaged static mask."""
    return [StaticMask(r["file"], r["kind"], r["instrument"], r["detid"], (int(r["xbin"]), int(r["ybin"])),
                       int(r["version"]), r["valid_from"], r["valid_before"]) for r in _rows("masks.csv")]


def static_mask_file(detid: str, kind: str, binning: tuple[int, int], date=None) -> StaticMask | None:
    """The packaged mask ('bpm' or 'illum') for a detector set, binning and date, or None.

    Among the masks of the detector set valid on ``date``: the one at the frame's binning, else the finest
    (it is rebinned); of those, the highest version (as DRAGONS picks).
    """
    day = _isodate(date) if date else None
    found = [m for m in static_masks() if m.detid == detid.strip() and m.kind == kind
             and (day is None or ((not m.valid_from or m.valid_from <= day)
                                  and (not m.valid_before or day < m.valid_before)))]
    if not found:
        return None
    return max(found, key=lambda m: (m.binning == tuple(binning), -m.binning[0] * m.binning[1], m.version))
