"""Indexing a raw folder into the observing log: gmosred vs plain astropy loops, same files, one run.

    python benchmarks/bench_obslog.py [--files 300] [--bz2-files 20]

Peers: the loop the issue names (astropy.io.fits.open + reading every extension's data), and the
cookbook's obslog.py way (astropy.io.fits.open + the primary and first extension headers).
Files are full-size GMOS-S EEV 2x2 raw frames (14.6 MB); timings are warm-cache wall times.
"""
from __future__ import annotations

import argparse
import bz2
import shutil
import tempfile
import time
from pathlib import Path

from astropy.io import fits

from bench_read import make_frame
from gmosred.obslog import index as obslog


def astropy_data_loop(folder: Path) -> None:
    for p in sorted(folder.iterdir()):
        if ".fits" in p.name:
            with fits.open(p) as hdul:
                for hdu in hdul[1:]:
                    hdu.data  # noqa: B018 - reading the data is the point


def astropy_header_loop(folder: Path) -> None:
    for p in sorted(folder.iterdir()):
        if ".fits" in p.name:
            with fits.open(p) as hdul:
                dict(hdul[0].header), dict(hdul[1].header), len(hdul)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--bz2-files", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = make_frame(tmp)
        plain, packed = tmp / "plain", tmp / "packed"
        plain.mkdir()
        packed.mkdir()
        for k in range(args.files):
            shutil.copy(one, plain / f"S20060910S{k + 1:04d}.fits")
        data = bz2.compress(one.read_bytes(), 9)
        for k in range(args.bz2_files):
            (packed / f"S20060910S{k + 1:04d}.fits.bz2").write_bytes(data)
        rows = []
        for label, folder in ((f"{args.files} x .fits", plain), (f"{args.bz2_files} x .fits.bz2", packed)):
            astropy_header_loop(folder)  # warm the page cache
            t_data = timed(lambda: astropy_data_loop(folder))
            t_head = timed(lambda: astropy_header_loop(folder))
            t_ours = timed(lambda: obslog.build(folder, tmp / f"{folder.name}.db", jobs=2, show_progress=False))
            t_fast = timed(lambda: obslog.build(folder, tmp / f"{folder.name}-fast.db", jobs=2, checksum=False,
                                                show_progress=False))
            t_again = timed(lambda: obslog.build(folder, tmp / f"{folder.name}.db", jobs=2, show_progress=False))
            rows.append((label, t_ours, t_fast, t_again, t_data, t_head))
    print(f"{'folder':18s} {'gmosred':>9s} {'no-md5':>8s} {'re-run':>8s} {'astropy data':>13s} {'astropy hdr':>12s}"
          f" {'data/gmosred':>13s} {'data/no-md5':>12s}")
    for label, ours, fast, again, data, head in rows:
        print(f"{label:18s} {ours:8.2f}s {fast:7.2f}s {again:7.2f}s {data:12.2f}s {head:11.2f}s"
              f" {data / ours:12.1f}x {data / fast:11.1f}x")


if __name__ == "__main__":
    main()
