"""Opening a set of raw inputs for a master calibration: bad or mismatched files are left out."""
from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import GmosredError
from . import overscan as ovs
from .ccd import CCDReader

log = logging.getLogger("gmosred")
OPEN_THREADS = 2


def setup_key(reader: CCDReader) -> tuple:
    """What must agree between frames that are combined or calibrated together."""
    raw = reader.raw
    return (raw.phu.get("INSTRUME", "").strip(), raw.detector.detid, raw.binning, raw.roi,
            raw.read_speed, raw.gain_setting, tuple((a.ccd, a.ampname) for a in raw.amps))


def describe(key: tuple) -> str:
    inst, detid, (bx, by), roi, speed, gain, amps = key
    return f"{inst} {detid} {bx}x{by} {roi} {speed} read/{gain} gain, {len(amps)} amplifiers"


def open_inputs(paths, overscan: ovs.OverscanParams, *, obstype: str | None = None, what: str = "input",
                check=None, tmpdir=None) -> list[CCDReader]:
    """Open every path as a band-readable CCDReader; report and leave out the unusable ones.

    ``check(reader) -> str | None`` may veto a file with a reason. The setup shared by most inputs
    wins; files with another setup are left out with a message naming both setups.
    """
    paths = list(paths)

    def attempt(path):
        try:
            return CCDReader(path, overscan, in_memory=False, tmpdir=tmpdir)
        except GmosredError as e:
            return e

    with ThreadPoolExecutor(OPEN_THREADS) as pool:  # reading and overscan fitting release the GIL
        opened = list(pool.map(attempt, paths))
    readers = []
    for path, r in zip(paths, opened):
        if isinstance(r, GmosredError):
            log.warning(f"{r}: left out of the {what}")
            continue
        reason = None
        if obstype and r.raw.obstype != obstype:
            reason = f"OBSTYPE is {r.raw.obstype!r}, not {obstype!r}"
        elif check is not None:
            reason = check(r)
        if reason:
            log.warning(f"{path}: {reason}: left out of the {what}")
            r.close()
            continue
        readers.append(r)
    if not readers:
        raise GmosredError(f"no usable {what} inputs among {len(paths)} file(s)")
    common, _ = Counter(setup_key(r) for r in readers).most_common(1)[0]
    kept = []
    for r in readers:
        if setup_key(r) != common:
            log.warning(f"{r.path}: {describe(setup_key(r))} does not match the other inputs "
                        f"({describe(common)}): left out of the {what}")
            r.close()
        else:
            kept.append(r)
    if len(kept) == 1:
        log.warning(f"only one {what} input ({kept[0].path.name}): the result carries its noise and defects")
    return kept


def close_all(readers) -> None:
    for r in readers:
        r.close()


def input_names(readers) -> list[str]:
    return [Path(r.path).name for r in readers]
