"""Shared fixtures: the project's shared/ folder, a real-header raw file, a small simulated run."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GMOSRED_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the repository (or $GMOSRED_SHARED)."""
    path = Path(os.environ.get("GMOSRED_SHARED", REPO.parent / "shared"))
    if not (path / "data" / "real").is_dir():
        raise RuntimeError(f"the project's shared folder is missing: {path} (set GMOSRED_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_dir()


def real_headers(shared_path: Path):
    """Primary and extension headers of the real raw file S20120922S0406, as archived (no EXTNAME)."""
    from astropy.io import fits

    text = (shared_path / "data" / "real" / "S20120922S0406_raw_header.txt").read_text().splitlines()
    blocks, current = [], None
    for line in text:
        if line.startswith("--- HDU"):
            current = []
            blocks.append(current)
        elif current is not None and line.strip() and "added by AstroData" not in line:
            current.append(line.ljust(80)[:80])
    return [fits.Header.fromstring("".join(b)) for b in blocks]


@pytest.fixture(scope="session")
def real_raw(shared, tmp_path_factory):
    """A raw file with the real S20120922S0406 headers and known uint16 pixels (full range)."""
    from astropy.io import fits

    headers = real_headers(shared)
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


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The small simulated M8 run (4x4 binning) and its truth."""
    from gmosred.simulate import load_truth, simulate_run

    out = tmp_path_factory.mktemp("m8")
    simulate_run(out, size="small", seed=7, jobs=2, show_progress=False)
    return out, load_truth(out)
