"""The GMOS data model: one way to read and write GMOS files.

* Raw files as the Gemini archive serves them (``.fits``, ``.fits.bz2``,
  ``.fits.fz``): a primary header and one uint16 extension per amplifier,
  without EXTNAME, looked up by position -> :class:`RawFrame`.
* Processed files in Gemini's convention: primary header + SCI/VAR/DQ image
  extensions with EXTNAME/EXTVER, looked up by name -> :class:`Frame`.

Writing is atomic: a temporary file in the destination folder, then a
rename, so an interrupted write never leaves a partial file. Every problem
with an input file raises :class:`~gmosred.errors.GmosFileError`, whose
message names the file and the problem.
"""
from __future__ import annotations

import bz2
import contextlib
import io
import os
import re
import socket
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
from astropy.io import fits

from .. import instruments
from ..errors import GmosFileError, GmosredError
from . import dq as dqbits
from .headers import check_cards
from .sections import Section, parse_binning

RAW_PHU_KEYWORDS = ("INSTRUME", "DETID", "DATE-OBS", "OBSTYPE")
RAW_EXT_KEYWORDS = ("AMPNAME", "CCDSUM", "CCDSEC", "DETSEC", "DATASEC", "BIASSEC")
EXTENSIONS = (".fits", ".fits.bz2", ".fits.fz")


def stem(path) -> str:
    """File name without .fits/.fits.bz2/.fits.fz: 'S20060910S0001'."""
    name = Path(path).name
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


# ------------------------------------------------------------------ reading
def _file_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GmosFileError(path, f"cannot be read ({e.strerror or e})") from None
    if path.name.lower().endswith(".bz2"):
        try:
            data = bz2.decompress(data)
        except (OSError, EOFError, ValueError):
            raise GmosFileError(path, "corrupt or truncated bzip2 data") from None
    if not data:
        raise GmosFileError(path, "empty file")
    return data


def _open(path: Path, data: bytes) -> fits.HDUList:
    if not data.startswith(b"SIMPLE  ="):
        raise GmosFileError(path, "not a FITS file")
    _data_offsets(path, data)  # the structure is sound (bounded, our own walk) before astropy parses it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(io.BytesIO(data), lazy_load_hdus=False, do_not_scale_image_data=True)
    except (OSError, ValueError, IndexError, TypeError, KeyError) as e:
        raise GmosFileError(path, f"not a readable FITS file ({e})") from None
    return hdul


def _data_offsets(path: Path, data: bytes, n_hdus: int | None = None) -> list[int]:
    """Byte offset of each HDU's data (of the first ``n_hdus``, or all): a walk of the 2880-byte blocks
    (astropy's fileinfo re-verifies every card), refusing headers without an END card, structure
    keywords that are not whole numbers and data that run past the end of the file."""
    offsets, pos = [], 0
    while (len(offsets) < n_hdus) if n_hdus is not None else \
            (pos < len(data) and (not offsets or data[pos:pos + 8] == b"XTENSION")):
        where = "primary header" if not offsets else f"extension {len(offsets)}"
        end = pos
        while True:
            end = data.find(b"END", end, len(data))
            if end < 0:
                raise GmosFileError(path, f"truncated: the {where} has no END card")
            if (end - pos) % 80 == 0 and data[end:end + 80].rstrip(b" ") == b"END":
                break
            end += 3
        start = pos + ((end - pos) // 2880 + 1) * 2880
        try:
            size = _data_size(memoryview(data)[pos:end])
        except (KeyError, ValueError):
            raise GmosFileError(path, f"not a readable FITS file ({where}: BITPIX, NAXIS, NAXISn, PCOUNT or "
                                      "GCOUNT missing or not a whole number)") from None
        if start + size > len(data):
            raise GmosFileError(path, f"truncated: extension {len(offsets)} needs {size} bytes of data, "
                                      f"{max(len(data) - start, 0)} present")
        offsets.append(start)
        pos = start + -(-size // 2880) * 2880
    return offsets


def _data_size(header) -> int:
    """Bytes of an HDU's data (without the padding) from its header's bytes."""
    cards = {bytes(header[i:i + 8]).strip(): bytes(header[i + 10:i + 80]) for i in range(0, len(header), 80)}
    value = lambda k, d=None: int(cards[k].split(b"/")[0]) if k in cards or d is None else d  # noqa: E731
    naxis = value(b"NAXIS")
    if naxis == 0:
        return 0
    size = abs(value(b"BITPIX")) // 8 * value(b"GCOUNT", 1)
    count = 1
    for k in range(1, naxis + 1):
        count *= value(b"NAXIS%d" % k)
    size *= count + value(b"PCOUNT", 0)
    if naxis < 0 or size < 0 or abs(value(b"BITPIX")) not in (8, 16, 32, 64):
        raise ValueError("not a FITS data size")
    return size


def _image(path: Path, hdul: fits.HDUList, index: int, data: bytes, offsets: list[int]) -> np.ndarray:
    """Pixel data of HDU ``index`` as a native-endian array, uint16 for BZERO=32768 raw data."""
    hdu = hdul[index]
    hdr = hdu.header
    if isinstance(hdu, fits.CompImageHDU):
        try:
            arr = hdu.data
        except Exception as e:  # noqa: BLE001 - any decompression failure is a corrupt file
            raise GmosFileError(path, f"extension {index}: cannot decompress ({e})") from None
        bitpix = hdr["BITPIX"]
    else:
        bitpix = hdr["BITPIX"]
        shape = tuple(hdr[f"NAXIS{k}"] for k in range(hdr["NAXIS"], 0, -1))
        count = int(np.prod(shape)) if shape else 0
        itemsize = abs(bitpix) // 8
        start = offsets[index]
        if start + count * itemsize > len(data):
            raise GmosFileError(path, f"truncated: extension {index} needs {count * itemsize} bytes of data, "
                                      f"{max(len(data) - start, 0)} present")
        dtype = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix]
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)
    bzero, bscale = number(path, hdr, "BZERO", f"extension {index}", 0), number(path, hdr, "BSCALE", f"extension {index}", 1)
    if bitpix == 16 and bzero == 32768 and bscale == 1:
        if arr.dtype.kind == "u":  # already scaled by the decompressor
            return arr.astype(np.uint16, copy=False)
        # stored value + 32768 == the stored bits with the top bit flipped: one pass, native uint16 out
        return np.bitwise_xor(arr.view(arr.dtype.str.replace("i", "u")), np.uint16(0x8000), dtype=np.uint16)
    out = arr.astype(arr.dtype.newbyteorder("="))
    if bzero != 0 or bscale != 1:
        out = out * np.float32(bscale) + np.float32(bzero)
    return out


def number(path, header, key: str, where: str, default: float | None = None) -> float:
    """A header value that must be a finite number (``default`` if absent); GmosFileError names it otherwise."""
    value = header.get(key, default)
    if value is None:
        raise GmosFileError(path, f"{where} has no {key} keyword")
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if isinstance(value, bool) or not np.isfinite(out):
        raise GmosFileError(path, f"{where}: {key} = {value!r} is not a number")
    return out


def _printable(path, hdul: fits.HDUList) -> None:
    for i, hdu in enumerate(hdul):
        check_cards(path, hdu.header, "primary header" if i == 0 else f"extension {i}")


def _require(path, header, keys, where: str):
    missing = [k for k in keys if k not in header]
    if missing:
        raise GmosFileError(path, f"{where} has no {', '.join(missing)} keyword{'s' if len(missing) > 1 else ''}")


@dataclass
class AmpImage:
    """One raw amplifier extension: raw ADU (uint16, overscan included) and its parsed sections."""

    data: np.ndarray
    header: fits.Header
    index: int  # position in the file, 1-based
    ampname: str
    binning: tuple[int, int]
    datasec: Section  # binned pixels of this extension
    biassec: Section
    ccdsec: Section  # unbinned pixels of the CCD
    detsec: Section  # unbinned pixels of the detector array
    ccd: int  # 1, 2 or 3
    gain: float  # e-/ADU from the amplifier table
    read_noise: float  # e- from the amplifier table
    bias_level: float  # ADU, typical, from the amplifier table
    offset: int | None = None  # byte offset of the big-endian int16 data in the file (plain .fits only)


@dataclass
class RawFrame:
    """A raw GMOS file: primary header and amplifier extensions in file order."""

    path: Path
    phu: fits.Header
    amps: list[AmpImage]
    detector: instruments.DetectorSet
    read_speed: str
    gain_setting: str

    @property
    def name(self) -> str:
        return stem(self.path)

    @property
    def binning(self) -> tuple[int, int]:
        return self.amps[0].binning

    @property
    def obstype(self) -> str:
        return str(self.phu.get("OBSTYPE", "")).strip()

    @property
    def date(self) -> str:
        return str(self.phu["DATE-OBS"]).strip()

    @property
    def filter(self) -> str:
        """Filter band in the beam: 'r', 'Ha', ... ('open' if both wheels are open)."""
        return filter_name(self.phu)

    @property
    def roi(self) -> str:
        """Name of the (first) region of interest: 'Full Frame', 'CCD2', ..., or 'Custom'."""
        return roi_of(self.phu, self.binning)

    def ccd_amps(self, ccd: int) -> list[AmpImage]:
        """The amplifiers of one CCD, left to right on the detector."""
        return sorted((a for a in self.amps if a.ccd == ccd), key=lambda a: a.detsec.x1)


def filter_name(phu: fits.Header) -> str:
    """Band of the filter in the beam from FILTER1/FILTER2 ('open...' and 'Clear' ignored)."""
    bands = [instruments.filter_band(str(phu.get(k, ""))) for k in ("FILTER1", "FILTER2")]
    bands = [b for b in bands if b and not b.lower().startswith(("open", "clear"))]
    return "+".join(bands) if bands else "open"


def roi_of(phu: fits.Header, binning: tuple[int, int]) -> str:
    """ROI name from DETRO1X/XS/Y/YS (start unbinned 1-based, size in binned pixels)."""
    try:
        x1, y1 = int(phu["DETRO1X"]) - 1, int(phu["DETRO1Y"]) - 1
        x2, y2 = x1 + int(phu["DETRO1XS"]) * binning[0], y1 + int(phu["DETRO1YS"]) * binning[1]
    except (KeyError, ValueError):
        return "Unknown"
    return instruments.roi_name(x1, x2, y1, y2)


def _load(path) -> tuple[Path, bytes, fits.HDUList]:
    path = Path(path)
    data = _file_bytes(path)
    return path, data, _open(path, data)


def _is_processed(hdul: fits.HDUList) -> bool:
    return any(str(h.header.get("EXTNAME", "")).strip().upper() in ("VAR", "DQ") for h in hdul[1:])


#: Extension keywords that must be numbers when present (the reduction computes with them).
_NUMERIC_EXT = ("BZERO", "BSCALE", "GAIN", "RDNOISE", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2",
                "CD2_1", "CD2_2", "MJD-OBS", "EQUINOX")


def read_raw(path) -> RawFrame:
    """Read a raw GMOS file (.fits, .fits.bz2, .fits.fz); pixel data as uint16 ADU."""
    return _raw_frame(*_load(path))


def _raw_frame(path: Path, data: bytes, hdul: fits.HDUList) -> RawFrame:
    phu = hdul[0].header
    offsets = _data_offsets(path, data, len(hdul))
    _printable(path, hdul)
    if not str(phu.get("INSTRUME", "")).strip().startswith("GMOS"):
        raise GmosFileError(path, f"not a GMOS file (INSTRUME={str(phu.get('INSTRUME', 'missing')).strip()!r})")
    if _is_processed(hdul):
        raise GmosFileError(path, "is a processed file (SCI/VAR/DQ), not raw data")
    _require(path, phu, RAW_PHU_KEYWORDS, "primary header")
    try:
        detector = instruments.detector_set(str(phu["DETID"]))
    except instruments.UnknownInstrumentError as e:
        raise GmosFileError(path, str(e)) from None
    if len(hdul) < 2:
        raise GmosFileError(path, "has no image extensions")
    date = str(phu["DATE-OBS"]).strip()
    plain = not path.name.lower().endswith((".bz2", ".fz")) and not any(isinstance(h, fits.CompImageHDU) for h in hdul)
    read_speed = detector.read_speed(number(path, phu, "AMPINTEG", "primary header", 0))
    gain_set = instruments.gain_setting(number(path, hdul[1].header, "GAIN", "extension 1", 0))
    amps = []
    for i in range(1, len(hdul)):
        hdr = hdul[i].header
        where = f"extension {i}"
        _require(path, hdr, RAW_EXT_KEYWORDS, where)
        for key in _NUMERIC_EXT:
            if key in hdr:
                number(path, hdr, key, where)
        try:
            binning = parse_binning(hdr["CCDSUM"])
            secs = {k: Section.parse(hdr[k]) for k in ("DATASEC", "BIASSEC", "CCDSEC", "DETSEC")}
        except ValueError as e:
            raise GmosFileError(path, f"{where}: {e}") from None
        ampname = str(hdr["AMPNAME"]).strip()
        try:
            amp = instruments.amplifier(ampname, date, read_speed, gain_set)
        except instruments.UnknownInstrumentError as e:
            raise GmosFileError(path, f"{where}: {e}") from None
        pixels = _image(path, hdul, i, data, offsets)
        for key in ("DATASEC", "BIASSEC"):
            s = secs[key]
            if pixels.ndim != 2 or s.y2 > pixels.shape[0] or s.x2 > pixels.shape[1]:
                raise GmosFileError(path, f"{where}: {key} {hdr[key].strip()} lies outside the "
                                          f"{'x'.join(map(str, pixels.shape[::-1]))} image")
        amps.append(AmpImage(
            data=pixels, header=hdr, index=i, ampname=ampname, binning=binning,
            datasec=secs["DATASEC"], biassec=secs["BIASSEC"], ccdsec=secs["CCDSEC"], detsec=secs["DETSEC"],
            ccd=secs["DETSEC"].x1 // detector.ccd_shape[1] + 1,
            gain=amp.gain, read_noise=amp.read_noise, bias_level=amp.bias_level,
            offset=offsets[i] if plain and hdul[i].header["BITPIX"] == 16 and hdul[i].header.get("BZERO") == 32768
            and hdul[i].header.get("BSCALE", 1) == 1 else None))
    return RawFrame(path, phu, amps, detector, read_speed, gain_set)


# ------------------------------------------------------------------ processed frames
@dataclass
class Plane:
    """One processed image (a CCD, an amplifier or a mosaic): SCI with its VAR and DQ."""

    sci: np.ndarray
    header: fits.Header = field(default_factory=fits.Header)
    var: np.ndarray | None = None
    dq: np.ndarray | None = None
    extver: int = 1
    #: further images of the plane by EXTNAME (a fringe frame's USED), written after its DQ with its EXTVER
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Frame:
    """A processed GMOS file: primary header and SCI/VAR/DQ planes by EXTVER."""

    phu: fits.Header
    planes: list[Plane]
    path: Path | None = None
    #: binary tables by EXTNAME (PROVENANCE, PROVHISTORY, OBJCAT, REFCAT), written after the planes
    tables: dict[str, fits.BinTableHDU] = field(default_factory=dict)

    def plane(self, extver: int) -> Plane:
        for p in self.planes:
            if p.extver == extver:
                return p
        raise KeyError(f"no SCI extension with EXTVER={extver}")


def read_processed(path) -> Frame:
    """Read a Gemini-convention file: SCI/VAR/DQ looked up by (EXTNAME, EXTVER), in any order."""
    return _processed_frame(*_load(path))


def _processed_frame(path: Path, data: bytes, hdul: fits.HDUList) -> Frame:
    found: dict[tuple[str, int], int] = {}
    extra: dict[int, dict[str, int]] = {}
    tables = {}
    _printable(path, hdul)
    for i, hdu in enumerate(hdul[1:], start=1):
        name = str(hdu.header.get("EXTNAME", "")).strip().upper()
        if name in ("SCI", "VAR", "DQ"):
            found[(name, int(number(path, hdu.header, "EXTVER", f"extension {i}", 1)))] = i
        elif isinstance(hdu, fits.ImageHDU) and name and "EXTVER" in hdu.header:
            extra.setdefault(int(number(path, hdu.header, "EXTVER", f"extension {i}", 1)), {})[name] = i
        elif isinstance(hdu, fits.BinTableHDU) and name:
            tables[name] = fits.BinTableHDU(hdu.data.copy(), hdu.header.copy())
    versions = sorted(v for (n, v) in found if n == "SCI")
    if not versions:
        raise GmosFileError(path, "has no SCI extensions (is it a raw file?)")
    planes = []
    offsets = _data_offsets(path, data, len(hdul))
    for v in versions:
        i = found[("SCI", v)]
        var = _image(path, hdul, found[("VAR", v)], data, offsets) if ("VAR", v) in found else None
        dq = _image(path, hdul, found[("DQ", v)], data, offsets) if ("DQ", v) in found else None
        planes.append(Plane(_image(path, hdul, i, data, offsets), hdul[i].header, var,
                            dq.astype(np.uint16, copy=False) if dq is not None else None, v,
                            {n: _image(path, hdul, j, data, offsets) for n, j in extra.get(v, {}).items()}))
    return Frame(hdul[0].header, planes, path, tables)


def read(path) -> RawFrame | Frame:
    """Read any GMOS file: a raw file gives a :class:`RawFrame`, a processed one a :class:`Frame`."""
    path, data, hdul = _load(path)
    named_sci = any(h.header.get("EXTNAME") == "SCI" for h in hdul[1:])
    if _is_processed(hdul) or (named_sci and "GEM-TLM" in hdul[0].header):
        return _processed_frame(path, data, hdul)
    return _raw_frame(path, data, hdul)


# ------------------------------------------------------------------ writing
_UMASK = os.umask(0)
os.umask(_UMASK)

@contextlib.contextmanager
def _atomic(path: Path):
    """A binary file to write ``path`` through (bz2-compressed for a .bz2 name): a temporary file in the
    same folder, renamed into place when the block ends without an error, removed otherwise."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{socket.gethostname()}-{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as e:  # named by the product, not by its temporary file
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if path.name.lower().endswith(".bz2"):
                with bz2.BZ2File(f, "wb", compresslevel=9) as z:
                    yield z
            else:
                yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; products get the mode the umask gives
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_folder(folder, hint: str) -> Path:
    """Make ``folder`` if needed and check that files can be written there; a GmosredError names the
    folder, the problem and ``hint`` (what to do) otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".gmosred-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise GmosredError(f"{folder}: cannot write there ({e.strerror or e}): {hint}") from None
    return folder


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove the temporary files that killed gmosred processes of this host left in ``folder`` (a
    process killed outright cannot clean up); those of live processes and other hosts are kept."""
    host = socket.gethostname()
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        m = re.fullmatch(rf"\..+\.{re.escape(host)}-(\d+)\.[^.]+\.tmp", p.name)
        if m and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_atomic(hdul: fits.HDUList, path) -> Path:
    """Write ``hdul`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    with _atomic(path) as f:
        if isinstance(f, bz2.BZ2File):
            buf = io.BytesIO()
            hdul.writeto(buf)
            f.write(buf.getbuffer())
        else:
            hdul.writeto(f)
    return path


def write_bytes_atomic(data: bytes, path) -> Path:
    """Write ``data`` to ``path`` as :func:`write_atomic` writes a FITS file (a temporary file in the same folder,
    named so that a killed run's is recognised and removed, and a rename)."""
    path = Path(path)
    with _atomic(path) as f:
        f.write(data)
    return path


def timestamp() -> str:
    """UT time stamp for processing keywords; SOURCE_DATE_EPOCH (seconds) fixes it for reproducible outputs."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def to_hdulist(frame: Frame) -> fits.HDUList:
    """Gemini layout: PHU, then SCI, VAR, DQ for each EXTVER, then the tables."""
    return fits.HDUList([_primary(frame.phu)] + [hdu for p in frame.planes for hdu in _plane_hdus(p)]
                        + list(frame.tables.values()))


def _primary(phu: fits.Header) -> fits.PrimaryHDU:
    phu = phu.copy()
    phu["GEM-TLM"] = (timestamp(), "UT last modification with gmosred")
    return fits.PrimaryHDU(header=phu)


def _plane_hdus(p: Plane) -> list[fits.ImageHDU]:
    sci = _ext_header(p.header)
    hdus = [fits.ImageHDU(np.asarray(p.sci, dtype=np.float32), sci, name="SCI", ver=p.extver)]
    if p.var is not None:
        hdus.append(fits.ImageHDU(np.asarray(p.var, dtype=np.float32), var_header(sci), name="VAR", ver=p.extver))
    if p.dq is not None:
        hdus.append(fits.ImageHDU(np.asarray(p.dq, dtype=np.uint16), dq_header(sci), name="DQ", ver=p.extver))
    for name, image in p.extra.items():
        hdr = sci.copy()
        hdr.remove("BUNIT", ignore_missing=True)
        image = np.asarray(image)
        hdus.append(fits.ImageHDU(image if image.dtype.kind in "iu" else image.astype(np.float32), hdr, name=name,
                                  ver=p.extver))
    return hdus


def var_header(sci: fits.Header) -> fits.Header:
    """A VAR extension's header: SCI's (geometry, WCS) with the unit squared."""
    hdr = sci.copy()
    unit = str(sci.get("BUNIT", "")).strip()
    if unit:
        hdr["BUNIT"] = (f"{unit}**2", "Variance of SCI")
    return hdr


def dq_header(sci: fits.Header) -> fits.Header:
    """A DQ extension's header: SCI's (geometry, WCS) without a unit, naming the Gemini DQ bits."""
    hdr = sci.copy()
    hdr.remove("BUNIT", ignore_missing=True)
    for bit, name in dqbits.NAMES.items():
        hdr[f"DQBIT{bit.bit_length() - 1}"] = (name, f"DQ value {bit}")
    return hdr


_STRUCTURAL = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER",
               "BZERO", "BSCALE", "SIMPLE", "EXTEND"}


def _ext_header(header: fits.Header) -> fits.Header:
    out = fits.Header()
    for card in header.cards:
        if card.keyword in _STRUCTURAL or card.keyword in ("", "COMMENT", "HISTORY"):
            continue
        if card.keyword == "RADECSYS":  # raw GMOS headers' deprecated spelling (astropy warns on it)
            if "RADESYS" not in header:
                out.append(("RADESYS", card.value, card.comment))
            continue
        out.append(card)
    if "MJD-OBS" in out and "DATE-OBS" not in out:  # the WCS's time in the form astropy reads without a warning
        try:
            when = datetime(1858, 11, 17) + timedelta(days=float(out["MJD-OBS"]))
            out.set("DATE-OBS", when.isoformat(timespec="milliseconds"), "UT start of the exposure (from MJD-OBS)",
                    after="MJD-OBS")
        except (TypeError, ValueError, OverflowError):
            pass
    return out


def write(frame: Frame, path) -> Path:
    """Write a processed frame atomically in Gemini's SCI/VAR/DQ layout."""
    return write_planes(frame.phu, frame.planes, path, frame.tables)


def write_planes(phu: fits.Header, planes: Iterable[Plane], path, tables: dict | None = None) -> Path:
    """Write a processed frame atomically, plane by plane as ``planes`` yields them (a generator can
    make each plane after the previous one is written and gone), then ``tables`` (a dict, read only
    once the planes are written, or a callable returning it): the bytes of ``to_hdulist``."""
    path = Path(path)
    with _atomic(path) as f:
        primary = _primary(phu)
        primary.header.set("EXTEND", True, after="NAXIS")  # what HDUList.writeto adds
        f.write(primary.header.tostring().encode("ascii"))
        for plane in planes:
            hdus = _plane_hdus(plane)
            del plane  # nothing here holds a plane while the next one is made
            while hdus:
                hdu = hdus.pop(0)
                f.write(hdu.header.tostring().encode("ascii"))
                _write_data(f, hdu.data)
                del hdu
        for hdu in (tables() if callable(tables) else tables or {}).values():
            buf = io.BytesIO()
            hdu.writeto(buf)  # astropy writes a table HDU after an empty primary HDU: skip that one
            data = buf.getvalue()
            f.write(memoryview(data)[_data_offsets(path, data, 1)[0]:])
    return path


_WRITE_ROWS = 256  # rows converted to big-endian at a time


def _write_data(f, data: np.ndarray) -> None:
    """FITS data: big-endian, uint16 stored as int16 with BZERO 32768 (the top bit flipped), zero-padded
    to whole 2880-byte blocks."""
    for y in range(0, data.shape[0], _WRITE_ROWS):
        rows = data[y:y + _WRITE_ROWS]
        if rows.dtype == np.uint16:
            rows = np.bitwise_xor(rows, np.uint16(0x8000))
        f.write(np.ascontiguousarray(rows, rows.dtype.newbyteorder(">")).data)
    f.write(bytes(-data.nbytes % 2880))
