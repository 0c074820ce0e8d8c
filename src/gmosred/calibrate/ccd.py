"""Overscan-corrected, trimmed CCD planes of a raw file, whole or band by band.

A :class:`CCDReader` opens a raw file once (validating it and measuring every amplifier's
overscan), then serves each CCD as one plane in ADU: the data sections of the CCD's amplifiers
placed side by side (amplifiers of one CCD are joined here), minus their overscan levels. Planes
can be read in row bands straight from the file, so that a combine of any number of inputs keeps
only a band of each in memory (compressed inputs are unpacked once to a temporary file).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..frame.model import AmpImage, RawFrame, read_raw
from ..frame.sections import Section
from . import masks
from . import overscan as ovs


@dataclass
class AmpInPlane:
    """One amplifier's place in its CCD plane and what it needs to be read and calibrated."""

    amp: AmpImage
    columns: slice  # columns of the plane
    overscan: ovs.Overscan
    source: tuple  # ("fits", file descriptor, offset, shape) or ("npy", path) or ("mem", array)

    def rows(self, y0: int, y1: int, out: np.ndarray) -> np.ndarray:
        """Raw rows y0:y1 of the data section, overscan subtracted, into ``out`` (float32 ADU)."""
        d = self.amp.datasec
        kind = self.source[0]
        if kind == "fits":  # one positioned read of whole rows: no mapping kept, memory stays bounded
            _, fd, offset, shape = self.source
            row_bytes = shape[1] * 2
            buf = os.pread(fd, (y1 - y0) * row_bytes, offset + (d.y1 + y0) * row_bytes)
            stored = np.frombuffer(buf, dtype=">i2").reshape(y1 - y0, shape[1])[:, d.x1:d.x2]
            np.add(stored, np.float32(32768), out=out, dtype=np.float32)  # BZERO: exact in float32
        else:
            if kind == "mem":
                block = self.source[1][d.y1 + y0:d.y1 + y1, d.x1:d.x2]
            else:
                block = np.load(self.source[1], mmap_mode="r")[d.y1 + y0:d.y1 + y1, d.x1:d.x2]
            out[...] = block
        out -= self.overscan.levels[y0:y1, None]
        return out


def trimmed_bottom(amp: AmpImage, det) -> AmpImage:
    """The amplifier without the rows in its CCD's bottom rows (Gemini IRAF's trim of Hamamatsu CCDs)."""
    rows = masks.bottom_rows(det, amp.ccdsec, amp.binning)
    if not rows:
        return amp
    d, c, s = amp.datasec, amp.ccdsec, amp.detsec
    up = rows * amp.binning[1]
    return replace(amp, datasec=Section(d.x1, d.x2, d.y1 + rows, d.y2), ccdsec=Section(c.x1, c.x2, c.y1 + up, c.y2),
                   detsec=Section(s.x1, s.x2, s.y1 + up, s.y2))


class CCDReader:
    """The CCD planes of one raw file (see the module docstring)."""

    def __init__(self, path, overscan: ovs.OverscanParams = ovs.OverscanParams(), *, in_memory: bool = True,
                 tmpdir: Path | None = None):
        """``path``: a raw file, or a RawFrame already in memory (then ``in_memory`` must be true)."""
        if isinstance(path, RawFrame):
            self.raw, self.path = path, path.path
        else:
            self.raw, self.path = read_raw(path), Path(path)
        det = self.raw.detector
        self._overscan = overscan
        self._tmp = None
        self._fd = None
        self.planes: dict[int, list[AmpInPlane]] = {}
        for ccd in sorted({a.ccd for a in self.raw.amps}):
            amps = self.raw.ccd_amps(ccd)
            x0 = min(a.ccdsec.x1 for a in amps) // amps[0].binning[0]
            placed = []
            for a in amps:
                if overscan.bottom_rows == "trim":
                    a = trimmed_bottom(a, det)
                measured = ovs.measure(a.data, a.biassec, a.datasec, det.overscan_contaminated_columns, overscan,
                                       a.binning[1], bottom_rows=det.bottom_rows, first_row=a.ccdsec.y1)
                start = a.ccdsec.x1 // a.binning[0] - x0
                cols = slice(start, start + a.datasec.x2 - a.datasec.x1)
                placed.append(AmpInPlane(a, cols, measured, self._source(a, in_memory, tmpdir)))
            self.planes[ccd] = placed
        if not in_memory:
            for a in self.raw.amps:
                a.data = None  # the pixels are read again band by band

    @property
    def botrows(self) -> str:
        """What was done with the detector's bottom rows (keyword BOTROWS): 'trimmed', 'flagged' or 'none'
        (the detector has none)."""
        det = self.raw.detector
        if not det.bottom_rows:
            return "none"
        return "trimmed" if self._overscan.bottom_rows == "trim" else "flagged"

    def _source(self, amp: AmpImage, in_memory: bool, tmpdir) -> tuple:
        if in_memory:
            return ("mem", amp.data)
        if amp.offset is not None:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return ("fits", self._fd, amp.offset, amp.data.shape)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(dir=tmpdir, prefix=".gmosred-")
        dest = Path(self._tmp.name) / f"{self.raw.name}_{amp.index}.npy"
        np.save(dest, amp.data)
        return ("npy", dest)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------ geometry and pixels
    @property
    def ccds(self) -> list[int]:
        return list(self.planes)

    def shape(self, ccd: int) -> tuple[int, int]:
        amps = self.planes[ccd]
        d = amps[0].amp.datasec
        return d.y2 - d.y1, amps[-1].columns.stop

    def band(self, ccd: int, y0: int, y1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows y0:y1 of a CCD plane in ADU, overscan subtracted (into ``out`` if given)."""
        ny, nx = self.shape(ccd)
        if out is None:
            out = np.empty((y1 - y0, nx), np.float32)
        for a in self.planes[ccd]:
            a.rows(y0, y1, out[:, a.columns])
        return out

    def plane(self, ccd: int) -> np.ndarray:
        return self.band(ccd, 0, self.shape(ccd)[0])

    def amp_map(self, ccd: int, what: str) -> np.ndarray:
        """A per-column row vector of an amplifier property: 'gain' (e-/ADU), 'read_noise' (e-),
        'overscan_var' (ADU^2); broadcast it against a plane."""
        ny, nx = self.shape(ccd)
        out = np.empty((1, nx), np.float32)
        for a in self.planes[ccd]:
            out[0, a.columns] = a.overscan.variance if what == "overscan_var" else getattr(a.amp, what)
        return out

    def levels(self, ccd: int, y0: int, y1: int) -> np.ndarray:
        """The overscan levels subtracted from rows y0:y1 of a plane (ADU): ``band + levels`` are the raw
        counts, on which saturation is judged."""
        ny, nx = self.shape(ccd)
        out = np.empty((y1 - y0, nx), np.float32)
        for a in self.planes[ccd]:
            out[:, a.columns] = a.overscan.levels[y0:y1, None]
        return out

    def header(self, ccd: int) -> fits.Header:
        """The plane's header: the first amplifier's, with sections, overscan and WCS for the trimmed plane."""
        amps = self.planes[ccd]
        first = amps[0].amp
        bx, by = first.binning
        hdr = first.header.copy()
        for key in ("BIASSEC", "DATASEC", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT",
                    "BZERO", "BSCALE", "EXTNAME", "EXTVER", "INHERIT"):
            hdr.remove(key, ignore_missing=True)
        ny, nx = self.shape(ccd)
        ccdsec = Section(min(a.amp.ccdsec.x1 for a in amps), max(a.amp.ccdsec.x2 for a in amps),
                         first.ccdsec.y1, first.ccdsec.y2)
        detsec = Section(min(a.amp.detsec.x1 for a in amps), max(a.amp.detsec.x2 for a in amps),
                         first.detsec.y1, first.detsec.y2)
        hdr["CCDSEC"] = (str(ccdsec), "CCD section (unbinned)")
        hdr["DETSEC"] = (str(detsec), "Detector section (unbinned)")
        hdr["DATASEC"] = (f"[1:{nx},1:{ny}]", "Data section")
        hdr["TRIMSEC"] = (str(first.datasec), "Trimmed section of the raw extension")
        hdr["CCDNAME"] = first.header.get("CCDNAME", "")
        if "CRPIX1" in hdr:
            hdr["CRPIX1"] = hdr["CRPIX1"] - first.datasec.x1 + amps[0].columns.start
            hdr["CRPIX2"] = hdr["CRPIX2"] - first.datasec.y1
        for k, a in enumerate(amps, start=1):
            suffix = "" if len(amps) == 1 else str(k)
            o = a.overscan
            hdr[f"OVERSCA{suffix}" if suffix else "OVERSCAN"] = (round(o.mean, 3), "Overscan mean level (ADU)")
            hdr[f"OVERSE{suffix}" if suffix else "OVERSEC"] = (str(o.section) if o.section else "none",
                                                              f"Overscan section used ({o.mode})")
            hdr[f"OVERRM{suffix}" if suffix else "OVERRMS"] = (round(o.rms, 4), "Overscan rms (ADU)")
            if suffix:
                hdr[f"AMPNAM{suffix}"] = a.amp.ampname
        return hdr
