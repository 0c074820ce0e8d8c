"""FITS headers without pixel data: what the observing log needs, read as cheaply as possible.

Plain and tile-compressed (.fits.fz) files are walked header by header, seeking over the data;
.fits.bz2 files are decompressed as a stream (the data are discarded, never decoded). The whole
file's MD5 (as the Gemini archive reports it for the file it serves) is optional.
"""
from __future__ import annotations

import bz2
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import GmosFileError

BLOCK = 2880
_CHUNK = 1 << 20


@dataclass
class HeaderScan:
    """Primary header, first extension header (None if absent), extension count, file facts."""

    path: Path
    phu: object  # astropy.io.fits.Header
    ext1: object | None
    n_ext: int
    size: int
    mtime: float
    md5: str | None


def _read_header(f, path: Path, which: str) -> bytes | None:
    """Blocks of one header up to its END card; None at a clean end of file."""
    blocks = []
    while True:
        block = f.read(BLOCK)
        if not block and not blocks:
            return None
        if not blocks and which == "primary" and not block.startswith(b"SIMPLE  ="):
            raise GmosFileError(path, "not a FITS file")
        if len(block) < BLOCK:
            raise GmosFileError(path, f"truncated: {which} header ends early")
        blocks.append(block)
        for i in range(0, BLOCK, 80):
            if block[i:i + 8] == b"END     ":
                return b"".join(blocks)
        if len(blocks) > 1000:
            raise GmosFileError(path, f"not a readable FITS file ({which} header has no END card)")


def _data_size(header) -> int:
    naxis = header.get("NAXIS", 0)
    if not naxis:
        return 0
    count = 1
    for k in range(1, naxis + 1):
        count *= header[f"NAXIS{k}"]
    size = abs(header["BITPIX"]) // 8 * header.get("GCOUNT", 1) * (count + header.get("PCOUNT", 0))
    return -(-size // BLOCK) * BLOCK


def _skip(f, n: int, path: Path, ext: int, seekable: bool, file_size: int) -> None:
    if seekable:
        pos = f.tell()
        if pos + n > file_size:
            raise GmosFileError(path, f"truncated: extension {ext} needs {n} bytes of data, "
                                      f"{max(file_size - pos, 0)} present")
        f.seek(n, os.SEEK_CUR)
        return
    left = n
    while left:
        got = len(f.read(min(left, _CHUNK)))
        if not got:
            raise GmosFileError(path, f"truncated: extension {ext} needs {n} bytes of data, {n - left} present")
        left -= got


def md5sum(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def scan_headers(path, checksum: bool = True) -> HeaderScan:
    """Primary and first extension headers and the number of extensions, without the pixel data."""
    from astropy.io import fits

    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise GmosFileError(path, f"cannot be read ({e.strerror or e})") from None
    if st.st_size == 0:
        raise GmosFileError(path, "empty file")
    compressed = path.name.lower().endswith(".bz2")
    try:
        with (bz2.open(path, "rb") if compressed else open(path, "rb")) as f:
            headers = []
            n_ext = -1
            while True:
                raw = _read_header(f, path, "primary" if n_ext < 0 else f"extension {n_ext + 1}")
                if raw is None:
                    break
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        hdr = fits.Header.fromstring(raw.decode("ascii", errors="replace"))
                    except Exception as e:  # noqa: BLE001 - any unparsable header is a bad file
                        raise GmosFileError(path, f"not a readable FITS file ({e})") from None
                n_ext += 1
                if len(headers) < 2:
                    headers.append(hdr)
                _skip(f, _data_size(hdr), path, n_ext, not compressed, st.st_size)
    except (OSError, EOFError) as e:
        if compressed:
            raise GmosFileError(path, "corrupt or truncated bzip2 data") from None
        raise GmosFileError(path, f"cannot be read ({e})") from None
    return HeaderScan(path, headers[0], headers[1] if len(headers) > 1 else None, n_ext,
                      st.st_size, st.st_mtime, md5sum(path) if checksum else None)

