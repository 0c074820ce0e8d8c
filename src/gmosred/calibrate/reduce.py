"""Basic reduction of science frames (gireduce) -> rg<file>.fits.

SCI = (raw - overscan - bias) / flat x gain, in electrons (GAIN = 1, GAINMULT = the gain used).
VAR, in electrons^2, from the read noise, the overscan level's uncertainty, the Poisson noise of
the counts *before* flat-fielding and the calibrations' VAR:

    VAR = g^2/f^2 [ (rn/g)^2 + var_overscan + max(c, 0)/g + VAR_bias ] + SCI^2 VAR_flat / f^2,

with c = raw - overscan - bias in ADU. (Gemini IRAF's gireduce uses the already flat-fielded
counts in the Poisson term, which misstates the noise wherever the flat is not 1.)
DQ = static bad pixels (1) | saturated, judged on the raw counts (4) | unilluminated (64) |
the calibrations' DQ.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..frame import dq as dqbits
from .. import instruments
from ..params import checked, param
from ..frame import provenance as prov
from ..frame.model import Frame, Plane, RawFrame, read_raw, timestamp, write
from ..frame.sections import Section
from . import masks
from . import overscan as ovs
from .bias import noise_var, setup_keywords, trim_keywords
from .ccd import CCDReader
from .flat import SATURATED_AT, check_calibration, load_calibration

@checked
class ReduceParams:
    """gireduce's choices (the overscan is its own section, shared with the calibrations)."""

    bpm: str | None = param(None, "bad-pixel mask file; none: the packaged one for the detector; 'none': no BPM")
    illum: str | None = param(None, "illumination mask file; none: the packaged one; 'none': no mask")
    prefix: str = param("rg", "prefix of the reduced frames' names")


def reduce_raw(raw: RawFrame, bias_frame: Frame | None = None, flat_frame: Frame | None = None,
               params: ReduceParams = ReduceParams(), *, overscan: ovs.OverscanParams = ovs.OverscanParams(),
               bias_name: str = "bias", flat_name: str = "flat") -> Frame:
    """gireduce on a raw frame in memory: overscan, trim, bias, flat, gain, VAR and DQ (no files)."""
    reader = CCDReader(raw, overscan)
    if bias_frame is not None:
        check_calibration(bias_frame, bias_name, reader, "bias")
    if flat_frame is not None:
        check_calibration(flat_frame, flat_name, reader, "flat")
    planes = [_reduce_ccd(reader, ccd, bias_frame, flat_frame, params) for ccd in reader.ccds]
    phu = raw.phu.copy()
    setup_keywords(phu, raw)
    phu["GGAIN"] = (timestamp(), "UT time stamp for GGAIN")
    trim_keywords(phu, reader)
    phu["BPMFILE"] = (masks.mask_name(raw, "bpm", params.bpm), "Static bad-pixel mask")
    phu["ILLMFILE"] = (masks.mask_name(raw, "illum", params.illum), "Illumination mask")
    phu["BUNIT"] = ("electron", "Units of SCI")
    reader.close()
    return Frame(phu, planes)


def reduce_frame(path, outdir, bias=None, flat=None, params: ReduceParams = ReduceParams(), *,
                 overscan: ovs.OverscanParams = ovs.OverscanParams()) -> Path:
    """Reduce one raw science frame into ``<outdir>/<prefix><name>.fits`` (calibrations by path,
    loaded once per process); returns its path."""
    started = timestamp()
    raw = read_raw(path)
    prov.refuse_twice(raw.phu, "GIREDUCE", path)
    frame = reduce_raw(raw, cached_calibration(bias, "bias"), cached_calibration(flat, "flat"), params,
                       overscan=overscan, bias_name=str(bias), flat_name=str(flat))
    prov.record(frame.phu, frame.tables, "reduce", "GIREDUCE", inputs=[path], started=started,
                calibrations={"bias": bias, "flat": flat}, params={"overscan": overscan, "reduce": params})
    return write(frame, Path(outdir) / f"{params.prefix}{raw.name}.fits")


_CAL_CACHE: dict = {}


def cached_calibration(path, kind):
    """A calibration loaded once per process (keyed by path and mtime): a worker reducing many frames
    with one master bias and flat reads them once."""
    if not path:
        return None
    key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
    if key not in _CAL_CACHE:
        if len(_CAL_CACHE) > 8:
            _CAL_CACHE.clear()
        _CAL_CACHE[key] = load_calibration(path, kind)
    return _CAL_CACHE[key]


def _reduce_ccd(reader: CCDReader, ccd: int, bias_frame, flat_frame, params: ReduceParams) -> Plane:
    from .reduce_core import reduce_plane

    raw = reader.raw
    hdr = reader.header(ccd)
    amps = reader.planes[ccd]
    c = reader.plane(ccd)
    amp_of_col = np.empty(c.shape[1], np.int64)
    well = np.empty(c.shape[1], np.float32)  # full well (e-) where the table has one
    for k, a in enumerate(amps):
        amp_of_col[a.columns] = k
        w = instruments.full_well(str(raw.phu.get("DETECTOR", "")), a.amp.ampname)
        well[a.columns] = np.inf if w is None else w
    levels = np.array([a.overscan.levels for a in amps], np.float32)
    ccdsec = Section.parse(hdr["CCDSEC"])
    bpm = None
    if params.bpm != "none":
        bpm = masks.static_mask(raw.detector.detid, "bpm", ccd, ccdsec, raw.binning, params.bpm, raw.date)
    unlit = masks.unilluminated(raw, ccd, ccdsec, params.illum)
    b = bias_frame.plane(ccd) if bias_frame is not None else None
    f = flat_frame.plane(ccd) if flat_frame is not None else None
    sci = np.empty(c.shape, np.float32)
    var = np.empty(c.shape, np.float32)
    dq = np.empty(c.shape, np.uint16)
    reduce_plane(c, levels, amp_of_col, reader.amp_map(ccd, "gain")[0], noise_var(reader, ccd)[0], well,
                 np.float32(SATURATED_AT), _plane(b, "sci"), _plane(b, "var"), _plane(b, "dq"),
                 _plane(f, "sci"), _plane(f, "var"), _plane(f, "dq"), _mask(bpm), _mask(unlit),
                 np.array([dqbits.SATURATED, dqbits.BAD_PIXEL, dqbits.UNILLUMINATED], np.int64), sci, var, dq)
    hdr["GAIN"] = (1.0, "Gain (data in electrons)")
    hdr["GAINMULT"] = (float(reader.planes[ccd][0].amp.gain), "Gain multiplication (e-/ADU)")
    hdr["GAINORIG"] = (float(reader.planes[ccd][0].amp.header.get("GAIN", 0)), "Raw header GAIN (stale)")
    hdr["RDNOISE"] = (float(reader.planes[ccd][0].amp.read_noise), "Read noise (e-), amplifier table")
    hdr["RONORIG"] = (float(reader.planes[ccd][0].amp.header.get("RDNOISE", 0)), "Raw header RDNOISE (stale)")
    hdr["BUNIT"] = ("electron", "Physical units")
    if len(reader.planes[ccd]) > 1:
        for k, a in enumerate(reader.planes[ccd], start=1):
            hdr[f"GAINMUL{k}"] = float(a.amp.gain)
    return Plane(sci, hdr, var, dq, extver=ccd)


_TYPES = {"sci": np.float32, "var": np.float32, "dq": np.uint16}


def _plane(cal: Plane | None, what: str) -> np.ndarray:
    """A calibration's SCI, VAR or DQ for the kernel: native, contiguous, or empty if it has none."""
    a = getattr(cal, what) if cal is not None else None
    return np.ascontiguousarray(a, _TYPES[what]) if a is not None else np.empty((0, 0), _TYPES[what])


def _mask(mask) -> np.ndarray:
    return np.ascontiguousarray(mask, bool) if mask is not None else np.empty((0, 0), bool)
