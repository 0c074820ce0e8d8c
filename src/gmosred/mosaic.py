"""Mosaic (gmosaic): the CCDs of a reduced frame into one plane -> mrg<file>.fits.

Geometry comes from the detector table: CCD2 is fixed; CCD1 and CCD3 are rotated about their
centres and their centres placed at the tabulated shifts from CCD2's (unbinned pixels, converted
for any binning, also unequal). The output frame is IRAF's: the CCDs' tiles side by side with gaps
of floor(gap / xbin) pixels (a 2x2 GMOS-S EEV frame becomes 3 x 1024 + 2 x 18 = 3108 x 2304), and
the WCS is CCD2's with CRPIX moved by CCD2's offset (+1042 at 2x2 EEV). CCD2 is copied; CCD1 and
CCD3 are resampled once by :mod:`gmosred.resample` (VAR and DQ propagated exactly). With
``tile=True`` every CCD is pasted at its tile without resampling (quick look, like gtile).

Residual shifts put a column or two of CCD1 and CCD3 beyond the frame's edges (their centres sit
1.2 and 2.7 binned pixels outward at 2x2 for the M8 detector set); those pixels are lost, as in IRAF.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .frame import dq as dqbits
from . import instruments
from .errors import GmosredError
from .frame.model import Frame, Plane, read, stem, timestamp, write
from .engines.resample import KERNELS, resample
from .frame import provenance as prov
from .params import checked, param
from .frame.sections import Section, parse_binning

@dataclass
class Layout:
    """Where each CCD plane goes in the output: plane pixel -> output pixel affine, and the output shape."""

    shape: tuple[int, int]
    to_output: dict[int, np.ndarray]  # 2x3 per CCD
    origin: tuple[int, int]  # output (x0, y0) in the full-detector mosaic frame
    ccd2_offset: tuple[float, float]  # CCD2 plane pixel -> output pixel shift (for the WCS)


def layout(detector: instruments.DetectorSet, binning: tuple[int, int], ccdsecs: dict[int, Section],
           tile: bool = False) -> Layout:
    """Output geometry for CCD planes covering ``ccdsecs`` (unbinned CCD sections) at ``binning``."""
    bx, by = binning
    ny_ccd, nx_ccd = detector.ccd_shape
    nxb = nx_ccd // bx
    gap = detector.gap // bx
    tile_x0 = {c: (c - 1) * (nxb + gap) for c in (1, 2, 3)}
    # output window: the tiles' parts covered by the planes
    x_lo = min(tile_x0[c] + s.x1 // bx for c, s in ccdsecs.items())
    x_hi = max(tile_x0[c] + s.x2 // bx for c, s in ccdsecs.items())
    y_lo = min(s.y1 // by for s in ccdsecs.values())
    y_hi = max(s.y2 // by for s in ccdsecs.values())
    mats = {}
    for c, s in ccdsecs.items():
        plane_to_full = np.array([[1.0, 0.0, s.x1 / bx], [0.0, 1.0, s.y1 / by], [0, 0, 1]])
        if tile or c == 2:
            full_to_mosaic = np.array([[1.0, 0.0, tile_x0[c]], [0.0, 1.0, 0.0], [0, 0, 1]])
        else:
            a = detector.placements[c - 1].to_ccd2_affine(detector.ccd_shape, binning)
            full_to_mosaic = np.array([[1.0, 0.0, tile_x0[2]], [0.0, 1.0, 0.0], [0, 0, 1]]) @ np.vstack([a, [0, 0, 1]])
        crop = np.array([[1.0, 0.0, -x_lo], [0.0, 1.0, -y_lo], [0, 0, 1]])
        mats[c] = (crop @ full_to_mosaic @ plane_to_full)[:2]
    s2 = ccdsecs.get(2)
    off2 = (tile_x0[2] + s2.x1 / bx - x_lo, s2.y1 / by - y_lo) if s2 is not None else (0.0, 0.0)
    return Layout((y_hi - y_lo, x_hi - x_lo), mats, (x_lo, y_lo), off2)


def join_amplifiers(frame: Frame, detector: instruments.DetectorSet) -> dict[int, Plane]:
    """One plane per CCD: planes of amplifiers (DETSEC within one CCD) pasted by their CCDSEC."""
    groups: dict[int, list[Plane]] = {}
    for p in frame.planes:
        try:
            detsec = Section.parse(p.header["DETSEC"])
        except (KeyError, ValueError):
            raise GmosredError(f"extension SCI,{p.extver} has no usable DETSEC") from None
        groups.setdefault(detsec.x1 // detector.ccd_shape[1] + 1, []).append(p)
    out = {}
    for ccd, planes in groups.items():
        if len(planes) == 1:
            out[ccd] = planes[0]
            continue
        bx, by = parse_binning(planes[0].header["CCDSUM"])
        secs = [Section.parse(p.header["CCDSEC"]) for p in planes]
        x0, y0 = min(s.x1 for s in secs), min(s.y1 for s in secs)
        x1, y1 = max(s.x2 for s in secs), max(s.y2 for s in secs)
        shape = ((y1 - y0) // by, (x1 - x0) // bx)
        sci, var, dq = np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.uint16)
        for p, s in zip(planes, secs):
            sl = (slice((s.y1 - y0) // by, (s.y2 - y0) // by), slice((s.x1 - x0) // bx, (s.x2 - x0) // bx))
            sci[sl] = p.sci
            if p.var is not None:
                var[sl] = p.var
            if p.dq is not None:
                dq[sl] = p.dq
        hdr = planes[0].header.copy()
        hdr["CCDSEC"] = str(Section(x0, x1, y0, y1))
        detsecs = [Section.parse(p.header["DETSEC"]) for p in planes]
        hdr["DETSEC"] = str(Section(min(d.x1 for d in detsecs), max(d.x2 for d in detsecs), y0 - secs[0].y1 + detsecs[0].y1,
                                    y1 - secs[0].y1 + detsecs[0].y1))
        out[ccd] = Plane(sci, hdr, var, dq, extver=ccd)
    return out


def mosaic_frame(frame: Frame, kernel: str = "linear", tile: bool = False, name: str = "frame") -> Frame:
    """The mosaic of a reduced frame (see the module docstring)."""
    detid = str(frame.phu.get("DETID", "")).strip()
    try:
        detector = instruments.detector_set(detid)
    except instruments.UnknownInstrumentError as e:
        raise GmosredError(f"{name}: {e}") from None
    planes = join_amplifiers(frame, detector)
    if 2 not in planes:
        raise GmosredError(f"{name}: has no CCD2 (the reference CCD): cannot mosaic")
    binning = parse_binning(planes[2].header["CCDSUM"])
    missing = sorted(set(_expected_ccds(frame.phu, binning, detector)) - set(planes))
    if missing:
        raise GmosredError(f"{name}: CCD{' and CCD'.join(map(str, missing))} missing (the ROI reads "
                           f"{len(planes) + len(missing)} CCDs): cannot mosaic; reduce the raw file again")
    ccdsecs = {c: Section.parse(p.header["CCDSEC"]) for c, p in planes.items()}
    geo = layout(detector, binning, ccdsecs, tile=tile)
    sci = np.zeros(geo.shape, np.float32)
    var = np.zeros(geo.shape, np.float32)
    dqo = np.full(geo.shape, dqbits.NO_DATA, np.uint16)
    for c, p in sorted(planes.items()):
        m = geo.to_output[c]
        pvar = p.var if p.var is not None else np.zeros_like(p.sci)
        pdq = p.dq if p.dq is not None else np.zeros(p.sci.shape, np.uint16)
        if np.allclose(m[:, :2], np.eye(2)) and np.allclose(m[:, 2], np.round(m[:, 2])):
            x0, y0 = int(round(m[0, 2])), int(round(m[1, 2]))
            ny, nx = p.sci.shape
            ys, xs = slice(max(y0, 0), min(y0 + ny, geo.shape[0])), slice(max(x0, 0), min(x0 + nx, geo.shape[1]))
            src = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
            sci[ys, xs], var[ys, xs], dqo[ys, xs] = p.sci[src], pvar[src], pdq[src]
            continue
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        # resample only over the output box this CCD can reach
        ny, nx = p.sci.shape
        corners = m @ np.array([[-0.5, -0.5, 1], [nx - 0.5, -0.5, 1], [-0.5, ny - 0.5, 1], [nx - 0.5, ny - 0.5, 1]]).T
        bx0, bx1 = max(int(np.floor(corners[0].min())), 0), min(int(np.ceil(corners[0].max())) + 1, geo.shape[1])
        by0, by1 = max(int(np.floor(corners[1].min())), 0), min(int(np.ceil(corners[1].max())) + 1, geo.shape[0])
        shift = np.array([[1, 0, bx0], [0, 1, by0], [0, 0, 1]], dtype=float)
        box_inv = (np.vstack([inv, [0, 0, 1]]) @ shift)[:2]
        box = (slice(by0, by1), slice(bx0, bx1))
        resample(p.sci, pvar, pdq, box_inv, (by1 - by0, bx1 - bx0), kernel, out=(sci[box], var[box], dqo[box]))

    hdr = _header(planes[2].header, geo, detector, binning)
    phu = frame.phu.copy()
    phu["GMSINTER"] = ("tile" if tile else kernel, "Interpolant used by GMOSAIC")
    phu["NSCIEXT"] = (1, "Number of science extensions")
    phu["PIXSCALE"] = (round(detector.pixel_scale * binning[1], 5), "Pixel scale in Y in arcsec/pixel")
    phu["OBSMODE"] = ("IMAGE", "Observing mode")
    for key in ("CCDSUM", "GAIN", "GAINMULT", "RDNOISE"):
        if key in hdr:
            phu[key] = hdr[key]
    return Frame(phu, [Plane(sci, hdr, var, dqo, extver=1)], tables=dict(frame.tables))


def _expected_ccds(phu, binning, detector) -> list[int]:
    """The CCDs the ROI (DETRO1X, DETRO1XS) covers; all three when the header does not say."""
    try:
        x1 = int(phu["DETRO1X"]) - 1
        x2 = x1 + int(phu["DETRO1XS"]) * binning[0]
    except (KeyError, ValueError):
        return [1, 2, 3]
    width = detector.ccd_shape[1]
    return [c for c in (1, 2, 3) if x1 < c * width and x2 > (c - 1) * width]


def _header(ccd2: fits.Header, geo: Layout, detector, binning) -> fits.Header:
    hdr = ccd2.copy()
    if "CRPIX1" in hdr:
        hdr["CRPIX1"] = hdr["CRPIX1"] + geo.ccd2_offset[0]
        hdr["CRPIX2"] = hdr["CRPIX2"] + geo.ccd2_offset[1]
    bx, by = binning
    x0, y0 = geo.origin
    ny, nx = geo.shape
    hdr["DATASEC"] = (f"[1:{nx},1:{ny}]", "Data section")
    hdr["DETSEC"] = (f"[1:{3 * detector.ccd_shape[1]},{y0 * by + 1}:{(y0 + ny) * by}]", "Detector section (unbinned)")
    for key in ("CCDSEC", "TRIMSEC", "CCDNAME", "AMPNAME", "OVERSCAN", "OVERSEC", "OVERRMS", "FRAMEID"):
        hdr.remove(key, ignore_missing=True)
    return hdr


@checked
class MosaicParams:
    """gmosaic's choices."""

    interpolant: str = param("linear", "resampling of CCD1 and CCD3 (linear: the cookbook's)",
                             choices=KERNELS)
    tile: bool = param(False, "paste the CCDs with gaps, without resampling (quick look, like gtile)")
    prefix: str = param("m", "prefix added to the mosaicked frames' names")


def mosaic_file(path, outdir, params: MosaicParams = MosaicParams()) -> Path:
    """Mosaic a reduced file ``rg<name>.fits`` into ``<outdir>/m<rg...>.fits``."""
    started = timestamp()
    path = Path(path)
    frame = read(path)
    if not isinstance(frame, Frame):
        raise GmosredError(f"{path}: is a raw file: reduce it first (gmosred reduce), then mosaic the rg file")
    prov.refuse_twice(frame.phu, "GMOSAIC", path)
    result = mosaic_frame(frame, params.interpolant, params.tile, name=str(path))
    prov.record(result.phu, result.tables, "mosaic", "GMOSAIC", inputs=[path], started=started,
                params={"mosaic": params}, carried=[frame])
    return write(result, Path(outdir) / f"{params.prefix}{stem(path)}.fits")
