"""A local stand-in for the Gemini Observatory Archive, serving simulated raw files.

It answers the two services gmosred uses, on 127.0.0.1 only:

* ``/jsonsummary/<terms>``: the archive's JSON listing (records with the archive's keys, as in
  its recorded answers), filtered by the terms astroquery sends (program, instrument, UT dates,
  observation type and class, object, binning); an unknown term is an HTTP 400, so a client that
  sends something the stand-in does not understand fails loudly.
* ``/file/<name>``: the file as stored (``.fits.bz2``), with HTTP Range support; a proprietary
  file (release date in the future) is HTTP 403 unless the request carries the session cookie.

Faults can be injected per file: a transfer cut after some bytes, corrupted bytes, HTTP 503; ``rate``
limits each connection's bandwidth, as a distant archive would.
Every request is logged (path, Range header) for tests to inspect.
"""
from __future__ import annotations

import bz2
import fnmatch
import hashlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

from .. import instruments
from ..frame.model import roi_of
from ..frame.headers import scan_headers
from .standin import StandIn
from .standin import send as _send

IGNORED_TERMS = {"notengineering", "NotFail", "RAW", "canonical", "present", "AnyQA", "includeengineering"}
OBSERVATION_TYPES = {"OBJECT", "BIAS", "DARK", "FLAT", "ARC", "PINHOLE", "RONCHI", "CAL", "FRINGE", "MASK"}
OBSERVATION_CLASSES = {"science", "acq", "progCal", "dayCal", "partnerCal", "acqCal"}
COOKIE_NAME = "gemini_archive_session"


def _band(value: str) -> str:
    band = instruments.filter_band(value)
    return "" if not band or band.lower().startswith(("open", "clear")) else band


def summary_record(path: Path, stored: bytes | None, *, release: date | None = None) -> dict:
    """The archive's ``jsonsummary`` record of a raw file stored as ``stored`` (its .bz2 bytes), or
    stored uncompressed (``stored`` None)."""
    scan = scan_headers(path, checksum=True)
    phu, ext1 = scan.phu, scan.ext1
    xbin, ybin = (int(v) for v in str(phu.get("CCDSUM") or ext1["CCDSUM"]).split())
    det = instruments.detector_set(str(phu["DETID"]).strip())
    start = datetime.fromisoformat(f"{phu['DATE-OBS']}T{phu['TIME-OBS']}")
    bands = [b for b in (_band(str(phu.get(k, ""))) for k in ("FILTER1", "FILTER2")) if b]
    obstype = str(phu["OBSTYPE"]).strip()
    name = path.name
    size = scan.size if stored is None else len(stored)
    md5 = scan.md5 if stored is None else hashlib.md5(stored).hexdigest()
    rel = release or date.fromisoformat(str(phu["RELEASE"]).strip())
    program = str(phu["GEMPRGID"]).strip()
    return {
        "name": name, "filename": name if stored is None else name + ".bz2", "path": "",
        "compressed": stored is not None, "file_size": size, "file_md5": md5, "size": size, "md5": md5,
        "data_size": scan.size, "data_md5": scan.md5, "lastmod": "2020-01-01 00:00:00+00:00", "mdready": True,
        "program_id": program, "engineering": False, "science_verification": False,
        "calibration_program": "-CAL" in program, "observation_id": str(phu["OBSID"]).strip(),
        "data_label": str(phu["DATALAB"]).strip(), "telescope": str(phu.get("TELESCOP", "Gemini-South")).strip(),
        "instrument": str(phu["INSTRUME"]).strip(), "ut_datetime": start.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "local_time": str(phu.get("LT", "")).strip(), "observation_type": obstype,
        "observation_class": str(phu.get("OBSCLASS", "")).strip(), "object": str(phu["OBJECT"]).strip(),
        "ra": float(phu.get("RA", 0.0)), "dec": float(phu.get("DEC", 0.0)),
        "azimuth": float(phu.get("AZIMUTH", 0.0)), "elevation": float(phu.get("ELEVATIO", 90.0)),
        "cass_rotator_pa": float(phu.get("CRPA", 0.0)), "airmass": float(phu.get("AIRMASS", 1.0)),
        "filter_name": "&".join(bands) or "open", "exposure_time": float(phu.get("EXPTIME", 0.0)),
        "disperser": "MIRROR", "camera": str(phu["INSTRUME"]).strip(), "central_wavelength": None,
        "wavelength_band": bands[0] if bands else None,
        "focal_plane_mask": "Imaging" if int(phu.get("MASKTYP", 0)) == 0 else str(phu["MASKNAME"]).strip(),
        "detector_binning": f"{xbin}x{ybin}", "detector_gain_setting": instruments.gain_setting(float(ext1["GAIN"])),
        "detector_roi_setting": roi_of(phu, (xbin, ybin)),
        "detector_readspeed_setting": det.read_speed(float(phu.get("AMPINTEG", 0.0))),
        "detector_welldepth_setting": None, "detector_readmode_setting": "Classic", "spectroscopy": False,
        "mode": "imaging", "adaptive_optics": False, "laser_guide_star": False, "wavefront_sensor": "PWFS2",
        "gcal_lamp": None, "raw_iq": 70, "raw_cc": 50, "raw_wv": 100, "raw_bg": 100, "requested_iq": None,
        "requested_cc": None, "requested_wv": None, "requested_bg": None, "qa_state": "Pass",
        "release": rel.isoformat(), "reduction": "RAW", "phot_standard": False,
        "types": str(["GEMINI", "GEMINI_SOUTH" if "-S" in str(phu["INSTRUME"]) else "GEMINI_NORTH", "GMOS",
                      "IMAGE", "RAW", "UNPREPARED", "CAL" if obstype == "BIAS" else "SIDEREAL"]),
    }


class StandInArchive(StandIn):
    """The archive's listing and file services for ``paths`` (raw .fits files), on 127.0.0.1.

    ``proprietary``: names of files whose release date is put a year after ``today``.
    ``token``: the session cookie that unlocks proprietary files.
    ``compress``: store the files as .fits.bz2, as the archive does (else as they are, read when asked).
    """

    def __init__(self, paths, *, proprietary=(), today: date | None = None, token: str = "pi-session",
                 compress: bool = True, jobs: int = 2):
        self.today = today or date.today()
        self.token = token
        paths = [Path(p) for p in paths]
        if compress:
            with ThreadPoolExecutor(jobs) as pool:  # bz2 releases the GIL
                stored = list(pool.map(lambda p: bz2.compress(p.read_bytes(), 9), paths))
        else:
            stored = [None] * len(paths)
        self.files: dict[str, bytes | Path] = {}  # filename -> stored bytes, or the file itself
        self.records: list[dict] = []
        for p, data in zip(paths, stored):
            release = self.today + timedelta(days=365) if p.name in set(proprietary) else None
            rec = summary_record(p, data, release=release)
            self.records.append(rec)
            self.files[rec["filename"]] = p if data is None else data
        self.cut_after: dict[str, int] = {}  # filename -> bytes sent before the connection drops (once)
        self.corrupt: dict[str, int] = {}  # filename -> how many more responses get a flipped byte
        self.unavailable: dict[str, int] = {}  # filename -> how many more requests get HTTP 503
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        self.rate: float | None = None  # bytes per second per connection (None: as fast as it goes)
        self.ranges = True  # honour HTTP Range requests (False: always send the whole file, with 200)
        super().__init__()
        self._lock = threading.Lock()

    def _request(self, h: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        if method != "GET":
            return _send(h, 405, b"GET only", "text/plain")
        with self._lock:
            self.log.append((h.path, h.headers.get("Range")))
        self._answer(h)

    def file_requests(self) -> list[tuple[str, str | None]]:
        return [(p.rsplit("/", 1)[-1], r) for p, r in self.log if p.startswith("/file/")]

    # -- answers -----------------------------------------------------------------------------

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path.startswith("/jsonsummary/"):
            try:
                body = json.dumps(self.listing(path[len("/jsonsummary/"):])).encode()
            except ValueError as e:
                return _send(h, 400, str(e).encode(), "text/plain")
            return _send(h, 200, body, "application/json")
        if path.startswith("/file/"):
            return self._serve_file(h, unquote(path[len("/file/"):]))
        return _send(h, 404, b"not found", "text/plain")

    def listing(self, terms: str) -> list[dict]:
        """The records matching an archive selection ('GMOS-S/BIAS/20061201-20061231/progid=...')."""
        checks = []
        for term in (unquote(t) for t in terms.split("/") if t):
            if term in IGNORED_TERMS:
                continue
            if "=" in term:
                key, value = term.split("=", 1)
                field = {"progid": "program_id", "object": "object"}.get(key)
                if field is None:
                    raise ValueError(f"unrecognised selection term {term!r}")
                checks.append(lambda r, f=field, v=value: fnmatch.fnmatchcase(r[f], v))
            elif term.startswith("GMOS"):
                checks.append(lambda r, v=term: r["instrument"].startswith(v))
            elif term in OBSERVATION_TYPES:
                checks.append(lambda r, v=term: r["observation_type"] == v)
            elif term in OBSERVATION_CLASSES:
                checks.append(lambda r, v=term: r["observation_class"] == v)
            elif re.fullmatch(r"\d{8}(-\d{8})?", term):
                first, last = term[:8], term[-8:]
                checks.append(lambda r, a=first, b=last: a <= r["ut_datetime"][:10].replace("-", "") <= b)
            elif re.fullmatch(r"\dx\d", term):
                checks.append(lambda r, v=term: r["detector_binning"] == v)
            else:
                raise ValueError(f"unrecognised selection term {term!r}")
        return [r for r in self.records if all(c(r) for c in checks)]

    def _serve_file(self, h: BaseHTTPRequestHandler, filename: str) -> None:
        rec = next((r for r in self.records if r["filename"] == filename), None)
        if rec is None:
            return _send(h, 404, b"no such file", "text/plain")
        cookie = h.headers.get("Cookie", "")
        if date.fromisoformat(rec["release"]) > self.today and f"{COOKIE_NAME}={self.token}" not in cookie:
            return _send(h, 403, b"proprietary data", "text/plain")
        with self._lock:
            if self.unavailable.get(filename, 0) > 0:
                self.unavailable[filename] -= 1
                return _send(h, 503, b"busy", "text/plain")
        data = self.files[filename]
        data = data.read_bytes() if isinstance(data, Path) else data
        start = 0
        rng = h.headers.get("Range") if self.ranges else None
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            start = int(m.group(1)) if m else 0
            if start >= len(data):
                return _send(h, 416, b"", "text/plain", extra={"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        with self._lock:
            if self.corrupt.get(filename, 0) > 0:
                self.corrupt[filename] -= 1
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            cut = self.cut_after.pop(filename, None)
        extra = {"Accept-Ranges": "bytes"}
        if rng:
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        h.send_response(206 if rng else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        if cut is not None:  # a dropped connection: part of the body, then the socket closes
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            return
        if not self.rate:
            h.wfile.write(body)
            return
        block = 1 << 16
        t0 = time.perf_counter()
        for i in range(0, len(body), block):
            h.wfile.write(body[i:i + block])
            ahead = (i + block) / self.rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
