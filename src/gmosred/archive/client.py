"""Searching the Gemini Observatory Archive through ``astroquery.gemini``.

The archive answers searches with its ``jsonsummary`` listing: one record per file, with the
file's name as stored (``S20061231S0001.fits.bz2``), its size and MD5 as stored (``file_size``,
``file_md5``) and uncompressed (``data_size``, ``data_md5``), and the header summary (program,
observation type and class, object, filter, binning, ROI, read mode, release date...).
:class:`ArchiveFile` is one such record with typed fields.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime

from ..errors import GmosredError
from ..instruments import filter_band

DEFAULT_ARCHIVE = "https://archive.gemini.edu"
#: Environment variable holding the archive session cookie (for proprietary data).
COOKIE_ENV = "GEMINI_ARCHIVE_SESSION"
COOKIE_NAME = "gemini_archive_session"


class ArchiveError(GmosredError):
    """The archive could not be reached or gave an unusable answer."""


def _text(value) -> str:
    """A listing value as text ('' for missing; astroquery turns every value into a string)."""
    text = "" if value is None else str(value)
    return "" if text in ("None", "--") else text  # '--' is how a masked table value prints


def _int(value) -> int | None:
    text = _text(value)
    return int(float(text)) if text else None


def _float(value) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _datetime(value) -> datetime | None:
    text = _text(value)
    return datetime.fromisoformat(text.replace("Z", "")) if text else None


def _date(value) -> date | None:
    text = _text(value)
    return date.fromisoformat(text[:10]) if text else None


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the archive, from its ``jsonsummary`` record."""

    name: str  # the frame, uncompressed: S20061231S0001.fits
    filename: str  # as stored and served: S20061231S0001.fits.bz2
    file_size: int | None
    file_md5: str
    data_size: int | None
    data_md5: str
    compressed: bool
    program_id: str
    data_label: str
    instrument: str
    ut_datetime: datetime | None
    observation_type: str
    observation_class: str
    object: str
    filter_name: str
    binning: str  # '2x2'
    roi: str  # 'Full Frame', 'Central Spectrum', ...
    read_speed: str  # 'slow' / 'fast'
    gain: str  # 'low' / 'high'
    focal_plane_mask: str
    exposure_time: float | None
    qa_state: str
    release: date | None
    phot_standard: bool

    @classmethod
    def from_record(cls, rec) -> ArchiveFile:
        """From one listing record (a dict, or a row of astroquery's table)."""
        filename = _text(rec["filename"])
        name = _text(rec["name"]) if "name" in _keys(rec) else ""
        if not name:
            name = filename[:-4] if filename.endswith(".bz2") else filename
        compressed = _text(rec["compressed"]).lower() == "true" if "compressed" in _keys(rec) \
            else filename.endswith(".bz2")
        return cls(
            name=name, filename=filename, file_size=_int(rec["file_size"]), file_md5=_text(rec["file_md5"]),
            data_size=_int(rec["data_size"]), data_md5=_text(rec["data_md5"]), compressed=compressed,
            program_id=_text(rec["program_id"]), data_label=_text(rec["data_label"]),
            instrument=_text(rec["instrument"]), ut_datetime=_datetime(rec["ut_datetime"]),
            observation_type=_text(rec["observation_type"]), observation_class=_text(rec["observation_class"]),
            object=_text(rec["object"]), filter_name=_text(rec["filter_name"]),
            binning=_text(rec["detector_binning"]), roi=_text(rec["detector_roi_setting"]),
            read_speed=_text(rec["detector_readspeed_setting"]), gain=_text(rec["detector_gain_setting"]),
            focal_plane_mask=_text(rec["focal_plane_mask"]), exposure_time=_float(rec["exposure_time"]),
            qa_state=_text(rec["qa_state"]), release=_date(rec["release"]),
            phot_standard=_text(rec["phot_standard"]).lower() == "true",
        )

    @property
    def bands(self) -> list[str]:
        """Bands of the filters in the beam: 'r_G0326' -> ['r']; 'open' and 'Clear' left out."""
        parts = [filter_band(p) for p in self.filter_name.split("&") if p.strip()]
        return [p for p in parts if not p.lower().startswith(("open", "clear"))]

    @property
    def band(self) -> str:
        return "+".join(self.bands) or "open"

    @property
    def kind(self) -> str:
        """What the file is, in the cookbook's words: bias, twilight flat, science, standard, ..."""
        if self.observation_type == "OBJECT":
            if self.object == "Twilight":
                return "twilight flat"
            if self.phot_standard or (self.observation_class == "partnerCal" and "-CAL" in self.program_id):
                return "standard"
            return "acquisition" if self.observation_class in ("acq", "acqCal") else self.observation_class or "object"
        return self.observation_type.lower() or "unknown"

    def proprietary(self, today: date | None = None) -> bool:
        """True while the file is still in its proprietary period."""
        return self.release is not None and self.release > (today or date.today())


def _keys(rec):
    return rec.colnames if hasattr(rec, "colnames") else rec.keys()


class Archive:
    """A Gemini archive at ``url`` (the public archive by default, or a local stand-in)."""

    def __init__(self, url: str = DEFAULT_ARCHIVE, *, cookie: str | None = None, timeout: float = 60.0):
        url = url.strip().rstrip("/")
        self.url = url if url.lower().startswith(("http://", "https://")) else f"https://{url}"
        self.cookie = cookie if cookie is not None else os.environ.get(COOKIE_ENV) or None
        self.timeout = timeout
        self._observations = None

    def _client(self):
        if self._observations is None:
            from astroquery.gemini import ObservationsClass
            from astroquery.gemini.urlhelper import URLHelper

            obs = ObservationsClass()
            obs.url_helper = URLHelper(self.url)  # the class attribute points at the public archive
            if self.cookie:
                obs._session.cookies.set(COOKIE_NAME, self.cookie)
            self._observations = obs
        return self._observations

    def search(self, *terms, **criteria) -> list[ArchiveFile]:
        """Raw files matching astroquery's ``query_criteria`` arguments (extra path terms allowed)."""
        import requests

        criteria.setdefault("raw_reduced", "RAW")
        try:
            table = self._client().query_criteria(*terms, **criteria)
        except requests.exceptions.JSONDecodeError:
            raise ArchiveError(f"{self.url}: the archive's answer to a search is not a JSON listing") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise ArchiveError(f"{self.url}: archive unreachable ({error_reason(e)})") from None
        except requests.exceptions.RequestException as e:
            raise ArchiveError(f"{self.url}: search failed ({error_reason(e)})") from None
        return [ArchiveFile.from_record(row) for row in table if _text(row["filename"])]

    def file_url(self, filename: str) -> str:
        return f"{self.url}/file/{filename}"

    def session(self):
        """A new HTTP session for downloads (with the archive cookie when one is set)."""
        import requests

        s = requests.Session()
        if self.cookie:
            s.cookies.set(COOKIE_NAME, self.cookie)
        s.headers["User-Agent"] = "gmosred"
        return s


def error_reason(exc: Exception) -> str:
    """The innermost, shortest description of a requests error."""
    text = str(exc)
    for marker in ("Connection broken", "Connection refused", "Name or service not known", "timed out",
                   "Temporary failure"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__
