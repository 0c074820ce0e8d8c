"""Digests of the pixel data of a run's products: products must keep their pixels through refactoring.

``python tests/pixel_digest.py`` writes ``tests/data/pixel_digests.json`` from a run of the current code
on the pipeline tests' folder (the small simulated run, seed 7: biases, r and i flats, M8-1 and M8-2).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

DIGESTS = Path(__file__).parent / "data" / "pixel_digests.json"


def pick(truth) -> list[str]:
    """The frames of the pipeline tests' folder."""
    return [r["file"] for r in truth.frames
            if r["kind"] == "bias" or (r["band"] in ("r", "i") and (r["kind"] == "twilight" or r["object"] in ("M8-1", "M8-2")))]


def digests(workdir) -> dict[str, str]:
    """{product/EXTNAME,EXTVER: sha256 of its data as big-endian bytes} for every image extension."""
    from astropy.io import fits

    out = {}
    for path in sorted(Path(workdir).glob("*.fits")):
        with fits.open(path) as hdul:
            for hdu in hdul[1:]:
                if not isinstance(hdu, fits.ImageHDU):
                    continue
                data = np.ascontiguousarray(hdu.data)
                key = f"{path.name}/{hdu.header.get('EXTNAME')},{hdu.header.get('EXTVER')}"
                out[key] = hashlib.sha256(data.astype(data.dtype.newbyteorder(">")).tobytes()).hexdigest()
    return out


if __name__ == "__main__":
    import tempfile

    from gmosred import pipeline
    from gmosred.pipeline import config
    from gmosred.simulate import load_truth, simulate_run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate_run(tmp / "m8", size="small", seed=7, jobs=2, show_progress=False)
        truth = load_truth(tmp / "m8")
        raw = tmp / "raw"
        raw.mkdir()
        for f in pick(truth):
            os.symlink(tmp / "m8" / "raw" / f"{f}.fits", raw / f"{f}.fits")
        cfg = config.load(overrides={"run": {"until": "mosaic"}})  # the mechanics' products
        (tmp / "work").mkdir()
        plan = pipeline.prepare(raw, tmp / "work", cfg)
        pipeline.run_plan(plan, tmp / "work", cfg, show_progress=False)
        DIGESTS.write_text(json.dumps(digests(tmp / "work"), indent=1, sort_keys=True) + "\n")
        print(f"wrote {DIGESTS}")
