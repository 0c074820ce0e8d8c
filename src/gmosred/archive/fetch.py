"""Downloading archive files: resumable, verified, a few at a time, decompressed on arrival.

* A transfer goes to ``RAWDIR/.partial/NAME.part``; only a file whose size and MD5 equal the
  archive's is renamed into place, so a partial file is never taken for a whole one. A later run
  resumes a ``.part`` file with an HTTP Range request.
* Dropped connections and server errors are retried (resuming); a checksum mismatch discards the
  transfer and fetches the file again; HTTP 403 (proprietary) and 404 are reported at once.
* ``.fits.bz2`` files are decompressed as they arrive (the uncompressed data checked against the
  archive's ``data_md5``) unless ``keep_compressed``.
* A local file of the same name with other contents is never replaced unless ``replace``; it is
  reported either way.
"""
from __future__ import annotations

import bz2
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .client import Archive, ArchiveFile, error_reason

log = logging.getLogger("gmosred")

PARTIAL_DIR = ".partial"
CHUNK = 1 << 20  # file reads
NET_CHUNK = 1 << 16  # network reads: a dropped connection loses at most this much of what arrived

# Outcome statuses
FETCHED, PRESENT, DECOMPRESSED, REPLACED, CONFLICT, PROPRIETARY, FAILED = (
    "fetched", "present", "decompressed", "replaced", "conflict", "proprietary", "failed")


@dataclass
class Outcome:
    file: ArchiveFile
    status: str
    message: str = ""
    path: Path | None = None
    bytes: int = 0  # bytes transferred in this run


@dataclass
class _Arrived:
    """A verified transfer waiting to be installed."""

    file: ArchiveFile
    part: Path
    target: Path
    replacing: bool
    moved: int
    local: bool = False  # ``part`` is the user's own .bz2 copy: decompress it, leave it in place


class _Denied(Exception):
    """The archive refused the file (403 / 401 / 404), or the run is stopping: no retry."""

    def __init__(self, message: str, status: str = FAILED):
        super().__init__(message)
        self.status = status


class _Retry(Exception):
    """A transfer that failed in a way worth retrying."""


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def local_target(f: ArchiveFile, rawdir: Path, keep_compressed: bool) -> tuple[Path, str, int | None]:
    """Where the file ends up and the MD5 and size it must have there."""
    if keep_compressed or not f.compressed:
        return rawdir / f.filename, f.file_md5, f.file_size
    return rawdir / f.name, f.data_md5, f.data_size


def _same(path: Path, md5: str, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return not md5 or md5_of(path) == md5


def local_state(f: ArchiveFile, rawdir: Path, keep_compressed: bool) -> str:
    """'present' (same contents as the archive's), 'different', 'stored' (only the archive's .bz2 is
    there, to be decompressed) or 'missing'."""
    path, md5, size = local_target(f, rawdir, keep_compressed)
    if path.exists():
        return "present" if _same(path, md5, size) else "different"
    stored = rawdir / f.filename
    if stored != path and stored.exists() and _same(stored, f.file_md5, f.file_size):
        return "stored"
    return "missing"


class Fetcher:
    """Fetches archive files into ``rawdir``; one instance per run (thread-safe)."""

    def __init__(self, archive: Archive, rawdir, *, keep_compressed: bool = False, replace: bool = False,
                 retries: int = 4, backoff: float = 1.0, bar=None):
        self.archive = archive
        self.rawdir = Path(rawdir)
        self.partial = self.rawdir / PARTIAL_DIR
        self.keep_compressed = keep_compressed
        self.replace = replace
        self.retries = retries
        self.backoff = backoff
        self.bar = bar
        self._lock = threading.Lock()
        self._local = threading.local()
        self.stopping = threading.Event()  # set on Ctrl-C: transfers stop at their next chunk

    def _session(self):
        if not hasattr(self._local, "session"):
            self._local.session = self.archive.session()
        return self._local.session

    def _advance(self, n: int) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.update(n)

    def transfer(self, f: ArchiveFile) -> Outcome | _Arrived:
        """Bring one file's verified bytes into the partial folder, or say why not (never raises)."""
        target, _, _ = local_target(f, self.rawdir, self.keep_compressed)
        state = local_state(f, self.rawdir, self.keep_compressed)
        if state == "present":
            self._advance(f.file_size or 0)
            return Outcome(f, PRESENT, path=target)
        if state == "different" and not self.replace:
            self._advance(f.file_size or 0)
            return Outcome(f, CONFLICT, f"{target}: a different file of this name is already there (not the "
                                        f"archive's {f.filename}); left as it is (--replace to overwrite it)",
                           path=target)
        if state == "stored":
            self._advance(f.file_size or 0)
            return _Arrived(f, self.rawdir / f.filename, target, False, 0, local=True)
        part = self.partial / (f.filename + ".part")
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            moved = self._download(f, part)
        except _Denied as e:
            return Outcome(f, e.status, f"{f.filename}: {e}")
        except (_Retry, OSError) as e:
            return Outcome(f, FAILED, f"{f.filename}: {e}")
        return _Arrived(f, part, target, state == "different", moved)

    def install(self, a: _Arrived) -> Outcome:
        """Move a verified transfer into place (decompressing it); never raises."""
        try:
            self._install(a)
        except (_Retry, OSError) as e:
            return Outcome(a.file, FAILED, f"{a.file.filename}: {e}", bytes=a.moved)
        if a.local:
            return Outcome(a.file, DECOMPRESSED, path=a.target)
        if a.replacing:
            return Outcome(a.file, REPLACED, f"{a.target}: replaced by the archive's {a.file.filename}",
                           path=a.target, bytes=a.moved)
        return Outcome(a.file, FETCHED, path=a.target, bytes=a.moved)

    # -- transfer ----------------------------------------------------------------------------

    def _download(self, f: ArchiveFile, part: Path) -> int:
        """Complete ``part`` to the archive's bytes, verified; returns the bytes transferred."""
        moved = [0]
        attempt = 0
        have = part.stat().st_size if part.exists() else 0
        self._advance(min(have, f.file_size or have))
        while True:
            try:
                if f.file_size is None or have < f.file_size:
                    self._transfer(f, part, have, moved)
                size = part.stat().st_size
                if f.file_size is not None and size != f.file_size:
                    raise _Retry(f"transfer ended at {size} of {f.file_size} bytes")
                if f.file_md5:
                    md5 = md5_of(part)
                    if md5 != f.file_md5:
                        self._advance(-size)
                        part.unlink()
                        raise _Retry(f"checksum mismatch (archive MD5 {f.file_md5}, received {md5})")
                return moved[0]
            except _Retry as e:
                attempt += 1
                if attempt > self.retries:
                    raise _Retry(f"{e}; gave up after {attempt} attempts") from None
                if self.stopping.is_set():
                    raise _Denied("interrupted") from None
                log.warning("%s: %s; trying again (%d of %d)", f.filename, e, attempt, self.retries)
                time.sleep(self.backoff * 2 ** (attempt - 1))
                have = part.stat().st_size if part.exists() else 0

    def _transfer(self, f: ArchiveFile, part: Path, have: int, moved: list[int]) -> None:
        """One HTTP request, appending to ``part`` from byte ``have``; counts bytes into ``moved[0]``."""
        import requests

        headers = {"Range": f"bytes={have}-"} if have else {}
        url = self.archive.file_url(f.filename)
        try:
            with self._session().get(url, headers=headers, stream=True, timeout=self.archive.timeout) as r:
                if r.status_code in (401, 403):
                    until = f" until {f.release:%Y-%m-%d}" if f.release else ""
                    raise _Denied(f"proprietary{until} (HTTP {r.status_code}); if the data are yours, set "
                                  "GEMINI_ARCHIVE_SESSION to your archive session cookie", PROPRIETARY)
                if r.status_code == 404:
                    raise _Denied("not on the archive (HTTP 404)")
                if r.status_code == 416:  # our partial file is longer than the archive's: start again
                    part.unlink(missing_ok=True)
                    self._advance(-have)
                    raise _Retry("partial file does not fit the archive's (HTTP 416)")
                if r.status_code >= 400:
                    raise _Retry(f"HTTP {r.status_code} from the archive")
                resumed = r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
                if have and not resumed:  # the server sent the whole file
                    self._advance(-have)
                    have = 0
                with open(part, "ab" if have else "wb") as out:
                    for chunk in r.iter_content(NET_CHUNK):
                        if self.stopping.is_set():
                            raise _Denied(f"interrupted after {have} bytes (kept for the next run to resume)")
                        out.write(chunk)
                        have += len(chunk)
                        moved[0] += len(chunk)
                        self._advance(len(chunk))
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as e:
            raise _Retry(f"connection lost after {have} bytes ({error_reason(e)})") from None
        except requests.exceptions.RequestException as e:  # a bad address, a redirect loop...
            raise _Denied(f"cannot be requested from {url} ({error_reason(e)})") from None

    # -- installation ------------------------------------------------------------------------

    def _install(self, a: _Arrived) -> None:
        """Move the verified transfer into place, decompressing it unless it is to stay compressed.
        A local .bz2 copy is decompressed and left as it is."""
        f, part, target = a.file, a.part, a.target
        if target.name == f.filename:
            os.replace(part, target)
            return
        drop = (lambda: None) if a.local else (lambda: part.unlink(missing_ok=True))
        self.partial.mkdir(parents=True, exist_ok=True)
        tmp = self.partial / (f.name + ".tmp")
        h = hashlib.md5()
        size = 0
        try:
            with bz2.open(part, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except (OSError, EOFError) as e:
            tmp.unlink(missing_ok=True)
            drop()
            raise _Retry(f"cannot decompress the archive's file ({e})") from None
        if (f.data_md5 and h.hexdigest() != f.data_md5) or (f.data_size is not None and size != f.data_size):
            tmp.unlink()
            drop()
            raise _Retry(f"decompressed data differ from the archive's (MD5 {h.hexdigest()}, {size} bytes; "
                         f"archive {f.data_md5}, {f.data_size} bytes)")
        os.replace(tmp, target)
        drop()

def fetch_all(archive: Archive, files: list[ArchiveFile], rawdir, *, connections: int = 4,
              keep_compressed: bool = False, replace: bool = False, retries: int = 4, backoff: float = 1.0,
              show_progress: bool | None = None) -> list[Outcome]:
    """Fetch ``files`` into ``rawdir`` over ``connections`` parallel connections, one bar in bytes."""
    from ..progress import progress

    rawdir = Path(rawdir)
    rawdir.mkdir(parents=True, exist_ok=True)
    total = sum(f.file_size or 0 for f in files)
    bar = progress(total=total, desc="download", enabled=show_progress, unit="B")
    bar.unit_scale = True
    fetcher = Fetcher(archive, rawdir, keep_compressed=keep_compressed, replace=replace, retries=retries,
                      backoff=backoff, bar=bar)
    outcomes: dict[str, Outcome] = {}
    # transfers on `connections` threads; decompression on one thread per core, so a connection
    # starts its next file while the last one is decompressed (bz2 and hashlib release the GIL)
    net = ThreadPoolExecutor(max(1, connections))
    cpu = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        installs = []
        for done in as_completed([net.submit(fetcher.transfer, f) for f in files]):
            res = done.result()
            if isinstance(res, Outcome):
                outcomes[res.file.filename] = res
            else:
                installs.append(cpu.submit(fetcher.install, res))
        for done in installs:
            o = done.result()
            outcomes[o.file.filename] = o
    except KeyboardInterrupt:
        # stop transfers at their next chunk (partial files stay, to be resumed); finish installing
        # what has arrived whole, so nothing already fetched is lost
        fetcher.stopping.set()
        net.shutdown(wait=True, cancel_futures=True)
        cpu.shutdown(wait=True)
        raise
    finally:
        net.shutdown()
        cpu.shutdown()
        bar.close()
    partial = rawdir / PARTIAL_DIR
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    return [outcomes[f.filename] for f in files]
