"""Mosaic of a full-size reduced frame: gmosred vs the same transform with reproject and scipy, one run.

    python benchmarks/bench_mosaic.py [--workdir DIR]

The input is a reduced 2x2 GMOS-S EEV frame of the simulated run (3 x 1024 x 2304). The peers
resample CCD1 and CCD3 onto the same output grid through the same geometry: ``reproject_interp``
with a WCS built from the mosaic's affine map (bilinear), and ``scipy.ndimage.affine_transform``
(order 1) with the analytic matrix. Times are for the resampling of SCI only (the peers carry no
VAR or DQ) and for gmosred's whole mosaic (SCI, VAR and DQ); max |difference| is over CCD1 and
CCD3 pixels that all three cover, as a fraction of the sky level.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import full_run


def best(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    from gmosred.frame import model as frame
    from gmosred import instruments
    from gmosred.calibrate.reduce import reduce_frame
    from gmosred.mosaic import layout, mosaic_frame
    from gmosred.engines.resample import resample
    from gmosred.frame.sections import Section

    run, truth = full_run(work)
    rec = next(r for r in truth.frames if r["kind"] == "science" and r["band"] == "r")
    rg = reduce_frame(run / "raw" / f"{rec['file']}.fits", work)
    f = frame.read_processed(rg)
    det = instruments.detector_set(f.phu["DETID"])
    geo = layout(det, (2, 2), {p.extver: Section.parse(p.header["CCDSEC"]) for p in f.planes})

    t_ours, mosaic = best(lambda: mosaic_frame(f, "linear"))
    ours = mosaic.planes[0].sci

    def core():
        out = {}
        for c in (1, 3):
            inv = np.linalg.inv(np.vstack([geo.to_output[c], [0, 0, 1]]))[:2]
            out[c] = resample(f.plane(c).sci, None, None, inv, geo.shape, "linear")[0]
        return out
    t_core, _ = best(core)

    from scipy import ndimage

    def scipy_affine():
        out = {}
        for c in (1, 3):
            inv = np.linalg.inv(np.vstack([geo.to_output[c], [0, 0, 1]]))[:2]
            m = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
            out[c] = ndimage.affine_transform(f.plane(c).sci, m, offset=(inv[1, 2], inv[0, 2]), output_shape=geo.shape,
                                              order=1, mode="constant", cval=np.nan)
        return out
    t_scipy, sp = best(scipy_affine)

    from astropy.wcs import WCS
    from reproject import reproject_interp

    def reproject_run():
        out = {}
        for c in (1, 3):
            # a WCS for each: output pixels as "sky" in a linear frame, input pixels mapped through the geometry
            m = geo.to_output[c]
            w_in = WCS(naxis=2)
            w_in.wcs.ctype = ["LINEAR", "LINEAR"]
            w_in.wcs.crpix = [1.0, 1.0]
            w_in.wcs.crval = [m[0, 2], m[1, 2]]
            w_in.wcs.cd = m[:, :2]
            w_out = WCS(naxis=2)
            w_out.wcs.ctype = ["LINEAR", "LINEAR"]
            w_out.wcs.crpix = [1.0, 1.0]
            w_out.wcs.crval = [0.0, 0.0]
            w_out.wcs.cd = np.eye(2)
            out[c] = reproject_interp((f.plane(c).sci, w_in), w_out, shape_out=geo.shape, order="bilinear")[0]
        return out
    t_rep, rp = best(reproject_run, repeat=1)

    sky = rec["sky_e"]
    diffs = {}
    for name, other in (("scipy", sp), ("reproject", rp)):
        d = 0.0
        for c in (1, 3):
            inside = np.isfinite(other[c]) & (other[c] != 0)
            box = np.zeros(geo.shape, bool)
            box[2:-2, 2:-2] = True
            d = max(d, float(np.nanmax(np.abs(ours - other[c])[inside & box & (mosaic.planes[0].dq & 16 == 0)])))
        diffs[name] = d / sky
    print(f"{'method':44s} {'time':>8s} {'vs gmosred core':>16s} {'max |diff| / sky':>17s}")
    print(f"{'gmosred mosaic (SCI+VAR+DQ, 3 CCDs)':44s} {t_ours:7.3f}s {'':>16s}")
    print(f"{'gmosred resampling core (SCI, CCD1+CCD3)':44s} {t_core:7.3f}s {1.0:15.1f}x")
    print(f"{'scipy.ndimage.affine_transform order 1':44s} {t_scipy:7.3f}s {t_scipy / t_core:15.1f}x {diffs['scipy']:16.1e}")
    print(f"{'reproject_interp bilinear':44s} {t_rep:7.3f}s {t_rep / t_core:15.1f}x {diffs['reproject']:16.1e}")


if __name__ == "__main__":
    main()
