"""Fetching archive files: gmosred download vs astroquery's own downloader, same files, one run.

    python benchmarks/bench_download.py [--files 20] [--work DIR]

Files are full-size GMOS-S EEV 2x2 raw frames of the simulated run, served as .fits.bz2 by the
local archive stand-in on 127.0.0.1 (so the network is not the limit; this measures the client).
Peers: astroquery.gemini's downloader (``_download_file``, what ``Observations.get_file`` calls, one
file at a time, no checksum) followed by bz2 decompression, as a user would script it. gmosred
fetches over 4 connections, checks size and MD5 of what arrived and of the decompressed data.
"""
from __future__ import annotations

import argparse
import bz2
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import full_run  # noqa: E402

from gmosred import archive  # noqa: E402
from gmosred.simulate.archive import StandInArchive  # noqa: E402


def astroquery_way(url: str, names: list[str], out: Path) -> None:
    from astroquery.gemini import ObservationsClass

    obs = ObservationsClass()
    for name in names:
        local = out / name
        obs._download_file(f"{url}/file/{name}", str(local), verbose=False)
        with bz2.open(local) as src, open(out / name[:-4], "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        local.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--rate", type=float, default=[0.0, 5.0], nargs="+",
                    help="bandwidth per connection in MB/s (0: unlimited); one table row set per value")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "gmosred-bench"))
    args = ap.parse_args()
    run, truth = full_run(Path(args.work))
    science = sorted(run / "raw" / (e["file"] + ".fits") for e in truth.frames if e["obstype"] == "OBJECT")
    paths = science[: args.files]
    t0 = time.perf_counter()
    stand_in = StandInArchive(paths)
    print(f"stand-in archive: {len(paths)} files compressed in {time.perf_counter() - t0:.1f} s; "
          f"{sum(len(b) for b in stand_in.files.values()) / 1e6:.0f} MB as .bz2, "
          f"{sum(p.stat().st_size for p in paths) / 1e6:.0f} MB uncompressed")
    print("\n| bandwidth per connection | client | time | vs astroquery |\n|---|---|---|---|")
    with stand_in:
        files = [archive.ArchiveFile.from_record(r) for r in stand_in.records]
        for rate in args.rate:
            stand_in.rate = rate * 1e6 or None
            label = f"{rate:g} MB/s" if rate else "unlimited (localhost)"
            with tempfile.TemporaryDirectory() as tmp:
                peer = Path(tmp) / "astroquery"
                peer.mkdir()
                t0 = time.perf_counter()
                astroquery_way(stand_in.url, [f.filename for f in files], peer)
                t_peer = time.perf_counter() - t0
                print(f"| {label} | astroquery _download_file + bz2, sequential, unverified | {t_peer:.2f} s | 1.0x |")
                for connections in (1, 4):
                    out = Path(tmp) / f"gmosred{connections}"
                    t0 = time.perf_counter()
                    outcomes = archive.fetch_all(archive.Archive(stand_in.url), files, out,
                                                 connections=connections, show_progress=False)
                    t = time.perf_counter() - t0
                    assert all(o.status == "fetched" for o in outcomes)
                    print(f"| {label} | gmosred, {connections} connection{'s' if connections > 1 else ''}, "
                          f"verified | {t:.2f} s | {t_peer / t:.1f}x |", flush=True)
                t0 = time.perf_counter()
                archive.fetch_all(archive.Archive(stand_in.url), files, out, show_progress=False)
                print(f"| {label} | gmosred re-run (all present: MD5 of each local file) | "
                      f"{time.perf_counter() - t0:.2f} s | |")

if __name__ == "__main__":
    main()
