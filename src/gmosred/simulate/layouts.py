"""Raw files for any GMOS detector set, binning, ROI and amplifier count, with known pixels.

The M8 run covers one detector set; later steps (overscan, mosaic) must work for all of them. This
module writes raw files in the archive's layout for any of them: amplifier extensions without
EXTNAME, uint16 + BZERO, DETSEC/CCDSEC/DATASEC/BIASSEC consistent with the ROI and binning, and
pixels that encode where they come from (``value = bias + detector_position(x, y)``), so a test can
check that every section lands where it should.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import instruments
from ..frame.model import write_atomic

OVERSCAN_COLUMNS = 32
#: Usual number of amplifiers read per CCD.
AMPS_PER_CCD = {"EEV": 1, "e2v DD": 2, "Hamamatsu": 4}
#: A date on which the amplifier table covers each detector set (for slow read / low gain).
TABLE_DATES = {
    "EEV2037-06-03EEV8194-19-04EEV8261-07-04": "2006-09-15",
    "EEV8056-20-03EEV8194-19-04EEV8261-07-04": "2005-06-01",
    "BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1": "2016-03-01",
    "BI11-41-4k-2,BI13-19-4k-3,BI12-34-4k-1": "2024-03-01",
    "EEV9273-16-03EEV9273-20-04EEV9273-20-03": "2005-06-01",
    "e2v 10031-23-05,10031-01-03,10031-18-04": "2012-03-01",
    "BI13-20-4k-1,BI12-09-4k-2,BI13-18-4k-2": "2018-03-01",
}


def slow_ampinteg(det: instruments.DetectorSet) -> int:
    """An AMPINTEG that the detector table reads as slow (the simulator's choice where no real header says)."""
    return det.slow_read_ampinteg_above + 1000


def ampname(det: instruments.DetectorSet, ccd: int, amp: int, namps: int) -> str:
    """AMPNAME of amplifier ``amp`` (0-based, left to right) of CCD ``ccd`` (1-based)."""
    name = det.ccd_names[ccd - 1]
    if det.family == "Hamamatsu":
        return f"{name}, {namps - amp}"  # real headers: amplifier 4 reads the leftmost columns
    if namps == 1:  # one amplifier: CCD3 is read from the right, the others from the left (real header)
        return f"{name}, {'right' if ccd == 3 else 'left'}"
    return f"{name}, {'left' if amp == 0 else 'right'}"


@dataclass(frozen=True)
class AmpLayout:
    """Where one amplifier of a full-frame readout sits: its CCD, name and unbinned CCD columns."""

    ccd: int  # 1..3
    index: int  # 0-based, left to right within the CCD
    name: str
    x1: int  # unbinned CCD columns [x1, x2)
    x2: int
    overscan_right: bool  # the overscan follows the data (the amplifier reads from the left)


def amplifiers(det: instruments.DetectorSet, namps: int | None = None) -> list[AmpLayout]:
    """The amplifiers of a detector set read with ``namps`` per CCD (default: the family's usual), in
    file order (CCD1 to CCD3, left to right)."""
    namps = namps or AMPS_PER_CCD[det.family]
    width = det.ccd_shape[1] // namps
    out = []
    for ccd in (1, 2, 3):
        for k in range(namps):
            name = ampname(det, ccd, k, namps)
            right = name.endswith("left") if det.family != "Hamamatsu" else k % 2 == 0
            out.append(AmpLayout(ccd, k, name, k * width, (k + 1) * width, right))
    return out


def detector_position(x, y):
    """The known signal (ADU) at unbinned detector position (x, y): a plane that identifies each pixel."""
    return 100.0 + 0.5 * np.asarray(x) + 0.25 * np.asarray(y)


def write_raw(path, detid: str, binning: tuple[int, int] = (2, 2), roi: str = "Full Frame",
              amps_per_ccd: int | None = None, bias: float = 1000.0, date: str | None = None) -> Path:
    """Write a raw file; pixel (x, y) of an amplifier holds ``bias + detector_position`` of its centre."""
    det = instruments.detector_set(detid)
    namps = amps_per_ccd or AMPS_PER_CCD[det.family]
    bx, by = binning
    ny_ccd, nx_ccd = det.ccd_shape
    rois = [r for r in instruments.named_rois() if r.name == roi and r.y2 <= ny_ccd]
    if not rois:
        raise ValueError(f"no ROI {roi!r} for {detid}")
    r = rois[0]
    date = date or TABLE_DATES[detid]
    phu = fits.Header()
    phu.update({"INSTRUME": det.instrument, "OBJECT": "layout test", "OBSTYPE": "OBJECT", "OBSCLASS": "science",
                "DATE-OBS": date, "DETID": detid, "DETTYPE": det.dettype, "NCCDS": 3, "NAMPS": namps,
                "AMPINTEG": slow_ampinteg(det), "EXPTIME": 10.0, "FILTER1": "open1-6",
                "FILTER2": "r_G0326", "GRATING": "MIRROR", "MASKNAME": "None", "DETNROI": 1,
                "DETRO1X": r.x1 + 1, "DETRO1XS": (r.x2 - r.x1) // bx, "DETRO1Y": r.y1 + 1,
                "DETRO1YS": (r.y2 - r.y1) // by})
    hdus = [fits.PrimaryHDU(header=phu)]
    for amp in amplifiers(det, namps):
        ccd, name, overscan_right = amp.ccd, amp.name, amp.overscan_right
        x0 = (ccd - 1) * nx_ccd + amp.x1  # detector columns of this amplifier (unbinned, 0-based)
        x1, x2 = max(x0, r.x1), min(x0 + amp.x2 - amp.x1, r.x2)
        if x2 <= x1:
            continue
        nx, ny = (x2 - x1) // bx, (r.y2 - r.y1) // by
        dx = 0 if overscan_right else OVERSCAN_COLUMNS
        # unbinned detector coordinates of each binned pixel's centre
        xs = x1 + (np.arange(nx) + 0.5) * bx - 0.5
        ys = r.y1 + (np.arange(ny) + 0.5) * by - 0.5
        image = np.full((ny, nx + OVERSCAN_COLUMNS), bias)
        image[:, dx:dx + nx] += detector_position(xs[None, :], ys[:, None])
        hdr = fits.Header()
        ccdx = x1 - (ccd - 1) * nx_ccd
        hdr.update({
            "CCDNAME": det.ccd_names[ccd - 1], "AMPNAME": name, "GAIN": 2.0, "RDNOISE": 3.5,
            "CCDSUM": f"{bx} {by}", "CCDSIZE": f"[1:{nx_ccd},1:{ny_ccd}]",
            "CCDSEC": f"[{ccdx + 1}:{ccdx + x2 - x1},{r.y1 + 1}:{r.y2}]",
            "DETSEC": f"[{x1 + 1}:{x2},{r.y1 + 1}:{r.y2}]",
            "DATASEC": f"[{dx + 1}:{dx + nx},1:{ny}]",
            "BIASSEC": f"[{nx + 1}:{nx + OVERSCAN_COLUMNS},1:{ny}]" if overscan_right else f"[1:{OVERSCAN_COLUMNS},1:{ny}]",
        })
        hdus.append(fits.ImageHDU(np.rint(image).astype(np.uint16), hdr))
    return write_atomic(fits.HDUList(hdus), path)
