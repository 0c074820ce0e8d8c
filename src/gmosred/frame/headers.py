"""FITS headers without pixel data: what the observing log needs, read as cheaply as possible.

Plain and tile-compressed (.fits.fz) files are walked header by header, seeking over the data;
.fits.bz2 files are decompressed as a stream (the data are discarded, never decoded). The whole
file's MD5 (as the Gemini archive reports it for the file it serves) is optional.
"""
from __future__ import annotations

import bz2
import hashlib
import operator
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


def check_cards(path, header, where: str) -> None:
    """Refuse a header with a card whose value cannot be parsed or whose bytes FITS does not allow (a
    corrupt file): no step could use it, no product could carry it."""
    for card in header.cards:
        try:
            card.value
            card.image
        except Exception:  # noqa: BLE001  (astropy raises several kinds for a card it cannot parse)
            raise GmosFileError(path, f"{where}: card {card.keyword!r} is unreadable (a corrupt file)") from None


def _data_size(header) -> int:
    """Bytes of an HDU's data, without the padding to whole blocks."""
    whole = lambda key, default=None: operator.index(header[key] if default is None else header.get(key, default))  # noqa: E731
    naxis = whole("NAXIS", 0)
    if not naxis:
        return 0
    count = 1
    for k in range(1, naxis + 1):
        count *= whole(f"NAXIS{k}")
    size = abs(whole("BITPIX")) // 8 * whole("GCOUNT", 1) * (count + whole("PCOUNT", 0))
    if size < 0 or naxis < 0:
        raise ValueError("negative size")
    return size


def _skip(f, n: int, path: Path, ext: int, seekable: bool, file_size: int) -> None:
    """Skip an HDU's ``n`` bytes of data and its padding; truncated when the data (as the pixel reader
    counts them) are not all there."""
    padded = -(-n // BLOCK) * BLOCK
    if seekable:
        pos = f.tell()
        if pos + n > file_size:
            raise GmosFileError(path, f"truncated: extension {ext} needs {n} bytes of data, "
                                      f"{max(file_size - pos, 0)} present")
        f.seek(padded, os.SEEK_CUR)
        return
    left = padded
    while left:
        got = len(f.read(min(left, _CHUNK)))
        if not got:
            if padded - left < n:
                raise GmosFileError(path, f"truncated: extension {ext} needs {n} bytes of data, "
                                          f"{padded - left} present")
            return  # only the last block's padding is missing
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
                    check_cards(path, hdr, "primary header" if n_ext == 0 else f"extension {n_ext}")
                    headers.append(hdr)
                try:
                    size = _data_size(hdr)
                except (KeyError, TypeError, ValueError):
                    raise GmosFileError(path, f"not a readable FITS file ({'primary header' if n_ext == 0 else f'extension {n_ext}'}"
                                              ": BITPIX/NAXISn missing or not whole numbers)") from None
                _skip(f, size, path, n_ext, not compressed, st.st_size)
    except (OSError, EOFError) as e:
        if compressed:
            raise GmosFileError(path, "corrupt or truncated bzip2 data") from None
        raise GmosFileError(path, f"cannot be read ({e})") from None
    return HeaderScan(path, headers[0], headers[1] if len(headers) > 1 else None, n_ext,
                      st.st_size, st.st_mtime, md5sum(path) if checksum else None)

