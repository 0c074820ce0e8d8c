"""Provenance of a product: what made it, from what, with which parameters (DRAGONS' tables).

* ``PROVENANCE``: one row per file that went into the product, with its MD5 and the step that used it
  (columns timestamp, filename, md5, primitive: DRAGONS' names); a product made from earlier products
  carries their rows forward, so the table traces every product back to the raw files.
* ``PROVHISTORY``: one row per step applied (timestamp_start, timestamp_stop, primitive, args): args
  is the step's resolved parameters and the gmosred version, as JSON.
* Short primary-header keywords: the step's time stamp, ``GMOSRED`` (version), each calibration's
  name and MD5 (``BIASIM`` / ``BIASMD5``, ``FLATIM`` / ``FLATMD5``).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import GmosredError
from .model import Frame, timestamp

PROVENANCE, HISTORY = "PROVENANCE", "PROVHISTORY"
_MD5_CACHE: dict = {}
#: Steps the pipeline did not apply to the frame of the product being made ({step: why}; see ``skipping``).
_SKIPPED: contextvars.ContextVar[dict] = contextvars.ContextVar("skipped", default={})


def md5(path) -> str:
    """MD5 of a file's bytes (cached per process by path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        h = hashlib.md5()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _MD5_CACHE[key] = h.hexdigest()
    return _MD5_CACHE[key]


def refuse_twice(phu: fits.Header, stamp: str, name) -> None:
    """A step never runs twice on one frame: its time stamp keyword says it already did."""
    if stamp in phu:
        raise GmosredError(f"{name}: {stamp} was already applied to it ({phu[stamp]}): not done again")


def skip(phu: fits.Header, step: str, why: str) -> None:
    """Say in a frame's primary header that ``step`` was not applied to it and why (``SKIPPED``: "steps: why"
    per reason, joined by "; ", e.g. "fringe, rmfringe: r does not fringe on EEV CCDs"); later products carry it."""
    reasons: dict[str, list[str]] = {}
    for entry in str(phu.get("SKIPPED", "")).split("; "):
        steps, sep, reason = entry.partition(": ")
        if sep:
            for s in steps.split(", "):
                if s != step:
                    reasons.setdefault(reason, []).append(s)
    reasons.setdefault(why, []).append(step)
    value = "; ".join(f"{', '.join(steps)}: {reason}" for reason, steps in reasons.items())
    phu.remove("SKIPPED", ignore_missing=True)  # its comment goes with it (an empty one would keep the old)
    phu["SKIPPED"] = (value, "Steps not applied, and why") if len(value) <= 40 else value


@contextlib.contextmanager
def skipping(notes: dict):
    """Within: every product recorded says that the steps in ``notes`` ({step: why}) were not applied to it (the
    pipeline passes a recipe's skipped steps to the product of the next step that runs)."""
    token = _SKIPPED.set(dict(notes))
    try:
        yield
    finally:
        _SKIPPED.reset(token)


def _params_json(params: dict) -> dict:
    out = {}
    for section, value in params.items():
        out[section] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def _table(name: str, columns: dict[str, list[str]]) -> fits.BinTableHDU:
    cols = []
    for col, values in columns.items():
        width = max([1] + [len(v) for v in values])
        cols.append(fits.Column(col, f"{width}A", array=np.array(values, dtype=f"S{width}")))
    return fits.BinTableHDU.from_columns(cols, name=name)


def _rows(tables: dict, name: str) -> dict[str, list[str]] | None:
    hdu = tables.get(name)
    if hdu is None:
        return None
    return {c: [v.decode() if isinstance(v, bytes) else str(v) for v in hdu.data[c]] for c in hdu.columns.names}


def record(phu: fits.Header, tables: dict, step: str, stamp: str, *, inputs=(), calibrations: dict | None = None,
           params: dict | None = None, started: str | None = None, carried: list | None = None) -> None:
    """Add one step's provenance to a product's primary header ``phu`` and ``tables`` (in place).

    ``inputs``: the files it was made from; ``calibrations``: {kind: file} (name and MD5 also as
    keywords); ``params``: {section: parameter dataclass}; ``carried``: frames (or their tables) whose
    PROVENANCE and PROVHISTORY rows come forward (a product made from an earlier product)."""
    from .. import __version__

    now = timestamp()
    prov = {"timestamp": [], "filename": [], "md5": [], "primitive": []}
    hist = {"timestamp_start": [], "timestamp_stop": [], "primitive": [], "args": []}
    for earlier in carried or []:
        before = earlier.tables if isinstance(earlier, Frame) else earlier
        for name, acc in ((PROVENANCE, prov), (HISTORY, hist)):
            rows = _rows(before, name)
            if rows:
                for col in acc:
                    acc[col] += rows.get(col, [""] * len(next(iter(rows.values()))))
    for path in list(inputs) + list((calibrations or {}).values()):
        if path:
            prov["timestamp"].append(now)
            prov["filename"].append(Path(path).name)
            prov["md5"].append(md5(path))
            prov["primitive"].append(step)
    hist["timestamp_start"].append(started or now)
    hist["timestamp_stop"].append(now)
    hist["primitive"].append(step)
    hist["args"].append(json.dumps({"gmosred": __version__, **_params_json(params or {})}, sort_keys=True))
    tables[PROVENANCE] = _table(PROVENANCE, prov)
    tables[HISTORY] = _table(HISTORY, hist)
    phu[stamp] = (now, f"UT time stamp for {stamp} (gmosred {__version__})")
    for skipped, why in _SKIPPED.get().items():
        skip(phu, skipped, why)
    phu["GMOSRED"] = (__version__, "gmosred version of the last step")
    for kind, path in (calibrations or {}).items():
        key = kind.upper()[:4]  # BIASIM/BIASMD5, FLATIM/FLATMD5 (IRAF's names for the first)
        phu[f"{key}IM"] = (Path(path).name if path else "none", f"{kind.capitalize()} image used")
        if path:
            phu[f"{key}MD5"] = (md5(path), f"MD5 of the {kind} image")


def history(frame: Frame) -> list[dict]:
    """The PROVHISTORY rows with their args decoded."""
    rows = _rows(frame.tables, HISTORY) or {}
    n = len(rows.get("primitive", []))
    return [{"primitive": rows["primitive"][i], "timestamp_start": rows["timestamp_start"][i],
             "timestamp_stop": rows["timestamp_stop"][i], "args": json.loads(rows["args"][i])} for i in range(n)]


def sources(frame: Frame) -> list[tuple[str, str, str]]:
    """(filename, md5, step) of every PROVENANCE row."""
    rows = _rows(frame.tables, PROVENANCE) or {}
    return list(zip(rows.get("filename", []), rows.get("md5", []), rows.get("primitive", [])))


