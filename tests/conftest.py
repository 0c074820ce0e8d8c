"""Shared fixtures: the packaged real headers, a real-header raw file, a small simulated run."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GMOSRED_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]


REAL = Path(__file__).parent / "data" / "real"  # real Gemini headers, packaged with the tests


@pytest.fixture(scope="session")
def real() -> Path:
    return REAL


def real_headers():
    """Primary and extension headers of the real raw file S20120922S0406, as archived (no EXTNAME)."""
    from astropy.io import fits

    text = (REAL / "S20120922S0406_raw_header.txt").read_text().splitlines()
    blocks, current = [], None
    for line in text:
        if line.startswith("--- HDU"):
            current = []
            blocks.append(current)
        elif current is not None and line.strip() and "added by AstroData" not in line:
            current.append(line.ljust(80)[:80])
    return [fits.Header.fromstring("".join(b)) for b in blocks]


@pytest.fixture(scope="session")
def real_raw(tmp_path_factory):
    """A raw file with the real S20120922S0406 headers and known uint16 pixels (full range)."""
    from astropy.io import fits

    headers = real_headers()
    rng = np.random.default_rng(3)
    pixels = []
    hdus = [fits.PrimaryHDU(header=headers[0])]
    for hdr in headers[1:]:
        data = rng.integers(0, 65536, size=(hdr["NAXIS2"], hdr["NAXIS1"]), dtype=np.uint16)
        data[0, :4] = [0, 1, 32767, 65535]
        pixels.append(data)
        hdus.append(fits.ImageHDU(data, header=hdr))
    path = tmp_path_factory.mktemp("real") / "S20120922S0406.fits"
    fits.HDUList(hdus).writeto(path)
    return path, pixels


def _simulator_key() -> str:
    """What a simulated run's bytes depend on: the simulator's, the instrument facts' and the writers' code
    and data, and the numerical libraries' versions."""
    import hashlib

    import astropy
    import scipy

    import gmosred

    h = hashlib.sha256(f"{np.__version__}|{scipy.__version__}|{astropy.__version__}".encode())
    root = Path(gmosred.__file__).parent
    for package in ("simulate", "instruments", "frame"):
        for f in sorted((root / package).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def small_run(request, tmp_path_factory):
    """The small simulated M8 run (4x4 binning) and its truth: a fresh copy for this session of a run
    simulated once per simulator version and kept in pytest's cache folder (the first session pays the
    ~30 s of simulation; ``pytest --cache-clear`` forgets it)."""
    import shutil

    from gmosred.simulate import load_truth, simulate_run

    out = tmp_path_factory.mktemp("m8") / "run"
    key = f"small-seed7-{_simulator_key()}"
    try:
        store = Path(request.config.cache.mkdir("gmosred-simulated"))
    except (AttributeError, OSError):  # no cache (-p no:cacheprovider, a read-only checkout)
        store = None
    if store is not None and (store / key / "complete").exists():
        shutil.copytree(store / key, out)
        return out, load_truth(out)
    simulate_run(out, size="small", seed=7, jobs=2, show_progress=False)
    if store is not None:
        try:
            for old in store.iterdir():  # other simulator versions' runs
                shutil.rmtree(old, ignore_errors=True)
            part = store / f"{key}.part"
            shutil.copytree(out, part)
            (part / "complete").touch()
            part.rename(store / key)
        except OSError:
            pass
    return out, load_truth(out)
