"""Static masks (bad pixels, unilluminated pixels) brought to a frame's binning and ROI.

Masks are Gemini's MEF files (``instruments/data/masks.csv`` lists the packaged ones): one extension per
CCD or per amplifier at some binning (CCDSUM), each placed on its CCD by its DETSEC (files without DETSEC:
one whole CCD per EXTVER). A mask at another binning is expanded to unbinned pixels, cut to the frame's
CCDSEC and binned again: a binned pixel is flagged if any pixel in it is.

Hamamatsu CCDs' bottom rows (48 unbinned, ``DetectorSet.bottom_rows``) are trimmed as Gemini IRAF does or
kept and flagged unilluminated (``OverscanParams.bottom_rows``); :func:`unilluminated` adds them.
"""
from __future__ import annotations

import bz2
import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import instruments
from ..errors import GmosFileError
from ..frame.sections import Section, parse_binning


@lru_cache(maxsize=8)
def load(path: str, ccd_shape: tuple[int, int]) -> tuple[tuple[int, int], dict[int, np.ndarray]]:
    """Binning and whole-CCD masks (CCD number -> array at the mask's binning) of a mask file."""
    from astropy.io import fits

    p = Path(path)
    ny, nx = ccd_shape
    try:
        data = p.read_bytes()
        if p.name.endswith(".bz2"):
            data = bz2.decompress(data)
        with fits.open(io.BytesIO(data)) as hdul:
            exts = [h for h in hdul[1:] if h.data is not None]
            mx, my = parse_binning(exts[0].header.get("CCDSUM", "1 1"))
            masks: dict[int, np.ndarray] = {}
            for k, h in enumerate(exts, start=1):
                if "DETSEC" not in h.header:
                    masks[int(h.header.get("EXTVER", k))] = np.asarray(h.data) != 0
                    continue
                det = Section.parse(h.header["DETSEC"])
                ccd = det.x1 // nx + 1
                whole = masks.setdefault(ccd, np.zeros((ny // my, nx // mx), bool))
                x0, y0 = (det.x1 - (ccd - 1) * nx) // mx, det.y1 // my
                whole[y0:y0 + h.data.shape[0], x0:x0 + h.data.shape[1]] = np.asarray(h.data) != 0
    except (OSError, ValueError, IndexError, EOFError, KeyError) as e:
        raise GmosFileError(p, f"not a usable mask file ({e})") from None
    return (mx, my), masks


def rebin_mask(mask: np.ndarray, mask_binning: tuple[int, int], ccdsec: Section, binning: tuple[int, int]) -> np.ndarray:
    """Bring a whole-CCD boolean mask at ``mask_binning`` to the frame's CCDSEC and ``binning``."""
    mx, my = mask_binning
    bx, by = binning
    # work at the finest common grid: the mask's pixels split (repeat) or the frame's pixels merged (any)
    gx, gy = math.gcd(mx, bx), math.gcd(my, by)
    fine = np.repeat(np.repeat(mask, my // gy, axis=0), mx // gx, axis=1) if (mx, my) != (gx, gy) else mask
    if ccdsec.x1 % gx or ccdsec.y1 % gy or ccdsec.x2 % gx or ccdsec.y2 % gy:
        raise ValueError(f"section {ccdsec} does not fall on the mask's {gx}x{gy} grid")
    cut = fine[ccdsec.y1 // gy:ccdsec.y2 // gy, ccdsec.x1 // gx:ccdsec.x2 // gx]
    fx, fy = bx // gx, by // gy
    if (fx, fy) == (1, 1):
        return np.ascontiguousarray(cut)
    ny, nx = cut.shape[0] // fy, cut.shape[1] // fx
    return cut[:ny * fy, :nx * fx].reshape(ny, fy, nx, fx).any(axis=(1, 3))


@lru_cache(maxsize=32)
def static_mask(detid: str, kind: str, ccd: int, ccdsec: Section, binning: tuple[int, int],
                path: str | Path | None = None, date: str | None = None) -> np.ndarray | None:
    """Boolean mask ('bpm': bad pixels; 'illum': unilluminated) for one CCD plane, or None if none is known.

    ``path`` overrides the packaged mask (found by detector set, binning and date). The result is cached
    and read-only.
    """
    det = instruments.detector_set(detid)
    if path is None:
        found = instruments.static_mask_file(detid, kind, binning, date)
        if found is None:
            return None
        path = found.path
    mask_binning, masks = load(str(path), det.ccd_shape)
    if ccd not in masks:
        return None
    out = rebin_mask(masks[ccd], mask_binning, ccdsec, binning)
    out.flags.writeable = False
    return out


def bottom_rows(det: instruments.DetectorSet, ccdsec: Section, binning: tuple[int, int]) -> int:
    """Binned rows of a plane starting at ``ccdsec`` that fall in the CCD's bottom rows (Hamamatsu: 48)."""
    return max(0, -(-(det.bottom_rows - ccdsec.y1) // binning[1]))


def unilluminated(raw, ccd: int, ccdsec: Section, path=None) -> np.ndarray | None:
    """The unilluminated pixels of a plane: the illumination mask (packaged, or ``path``; ``'none'``: no
    mask) and the CCD's bottom rows where they were kept; None if neither applies."""
    det = raw.detector
    mask = None if path == "none" else static_mask(det.detid, "illum", ccd, ccdsec, raw.binning, path, raw.date)
    rows = bottom_rows(det, ccdsec, raw.binning)
    if not rows:
        return mask
    ny = (ccdsec.y2 - ccdsec.y1) // raw.binning[1]
    nx = (ccdsec.x2 - ccdsec.x1) // raw.binning[0]
    out = np.zeros((ny, nx), bool) if mask is None else mask.copy()
    out[:rows] = True
    return out


def mask_name(raw, kind: str, path=None) -> str:
    """The mask file used for a frame: ``path``'s name, the packaged one's, or 'none' (none packaged, or
    ``path`` is 'none')."""
    if path == "none":
        return "none"
    if path is not None:
        return Path(path).name
    found = instruments.static_mask_file(raw.detector.detid, kind, raw.binning, raw.date)
    return found.file if found else "none"
