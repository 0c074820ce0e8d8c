"""Static masks (bad pixels, unilluminated pixels) brought to a frame's binning and ROI.

Masks are MEF files with one extension per CCD (EXTVER 1..3) covering the whole CCD at some
binning (CCDSUM), as Gemini distributes them: the GMOS-S EEV BPM at 4x4 and illumination mask at
2x2 ship with gmosred. A mask at another binning is expanded to unbinned pixels, cut to the
frame's CCDSEC and binned again: a binned pixel is flagged if any pixel in it is.
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
def _load(path: str) -> tuple[tuple[int, int], dict[int, np.ndarray]]:
    from astropy.io import fits

    p = Path(path)
    try:
        data = p.read_bytes()
        if p.name.endswith(".bz2"):
            data = bz2.decompress(data)
        with fits.open(io.BytesIO(data)) as hdul:
            exts = [h for h in hdul[1:] if h.data is not None]
            binning = parse_binning(exts[0].header.get("CCDSUM", "1 1"))
            masks = {int(h.header.get("EXTVER", k)): np.asarray(h.data) for k, h in enumerate(exts, start=1)}
    except (OSError, ValueError, IndexError, EOFError) as e:
        raise GmosFileError(p, f"not a usable mask file ({e})") from None
    return binning, masks


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
                path: str | Path | None = None) -> np.ndarray | None:
    """Boolean mask ('bpm': bad pixels; 'illum': unilluminated) for one CCD plane, or None if none is known.

    ``path`` overrides the packaged mask. The result is cached and read-only.
    """
    if path is None:
        found = instruments.static_mask_path(detid, kind)
        if found is None:
            return None
        path = found[0]
    mask_binning, masks = _load(str(path))
    if ccd not in masks:
        return None
    out = rebin_mask(masks[ccd] != 0, mask_binning, ccdsec, binning)
    out.flags.writeable = False
    return out


def mask_name(detid: str, kind: str, path=None) -> str:
    if path is not None:
        return Path(path).name
    found = instruments.static_mask_path(detid, kind)
    return Path(str(found[0])).name if found else "none"
