"""One resampling core: an image with its VAR and DQ through an affine map, done right.

The map is given analytically (a 2x3 matrix from output pixel (x, y) to input pixel (x, y), 0-based
at pixel centres), so no world coordinates are evaluated per pixel. Kernels: ``nearest``,
``linear`` (bilinear) and ``cubic`` (Keys' cubic convolution, a = -0.5). For every output pixel the
kernel gives weights w_k over input pixels k, and

* SCI = |det| sum w_k SCI_k (weights sum to 1; |det| is the input area of an output pixel, so flux
  is conserved),
* VAR = det^2 sum w_k^2 VAR_k: the true variance of the output pixel. Interpolating VAR like the data
  (as Gemini IRAF and DRAGONS do) overstates it by up to 1.5x for linear and more for cubic,
* DQ = OR of DQ_k over the pixels with w_k != 0: a flagged input pixel keeps its flag in every output
  pixel it feeds.

Output pixels whose centre maps outside the input's footprint get SCI 0, VAR 0, DQ 16 (no data);
neighbours beyond the edge of the input are taken from the edge.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import dq as dqbits

KERNELS = ("nearest", "linear", "cubic")


def _taps(kernel: str, frac: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """Offsets (relative to floor) and weights along one axis."""
    if kernel == "linear":
        return [0, 1], [1.0 - frac, frac]
    t = frac
    a = -0.5
    w_m1 = a * t * (t - 1) ** 2  # Keys' kernel at distances 1+t, t, 1-t, 2-t
    w0 = (a + 2) * t**3 - (a + 3) * t**2 + 1
    w1 = (a + 2) * (1 - t) ** 3 - (a + 3) * (1 - t) ** 2 + 1
    w2 = a * (1 - t) * t**2
    return [-1, 0, 1, 2], [w_m1, w0, w1, w2]


def resample(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, matrix: np.ndarray,
             out_shape: tuple[int, int], kernel: str = "linear", threads: int = 2, band_rows: int = 256,
             out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """Resample through ``matrix`` (output pixel -> input pixel); returns (sci, var, dq) of ``out_shape``.

    With ``out`` (three arrays of ``out_shape``, e.g. views into a mosaic), only the output pixels the
    input covers are written and the others are left as they are.
    """
    if kernel not in KERNELS:
        raise ValueError(f"interpolant {kernel!r}: choose from {', '.join(KERNELS)}")
    m = np.asarray(matrix, dtype=np.float64)
    det = abs(np.linalg.det(m[:, :2]))
    ny_out, nx_out = out_shape
    if out is None:
        out = (np.zeros(out_shape, np.float32), np.zeros(out_shape, np.float32),
               np.full(out_shape, dqbits.NO_DATA, np.uint16))
    out_sci, out_var, out_dq = out
    ny_in, nx_in = sci.shape
    xs = np.arange(nx_out, dtype=np.float64)

    def band(y0: int) -> None:
        y1 = min(y0 + band_rows, ny_out)
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        xi = m[0, 0] * xs[None, :] + m[0, 1] * ys + m[0, 2]
        yi = m[1, 0] * xs[None, :] + m[1, 1] * ys + m[1, 2]
        inside = (xi >= -0.5) & (xi <= nx_in - 0.5) & (yi >= -0.5) & (yi <= ny_in - 0.5)
        if not inside.any():
            return
        rows = np.nonzero(inside.any(axis=1))[0]
        cols = np.nonzero(inside.any(axis=0))[0]
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        xi, yi, inside = xi[r0:r1, c0:c1], yi[r0:r1, c0:c1], inside[r0:r1, c0:c1]
        s = np.zeros(xi.shape, np.float32)
        v = np.zeros(xi.shape, np.float32) if var is not None else None
        d = np.zeros(xi.shape, np.uint16)
        if kernel == "nearest":
            ix = np.clip(np.floor(xi + 0.5).astype(np.int64), 0, nx_in - 1)
            iy = np.clip(np.floor(yi + 0.5).astype(np.int64), 0, ny_in - 1)
            s = sci[iy, ix].astype(np.float32)
            if var is not None:
                v = var[iy, ix].astype(np.float32)
            if dq is not None:
                d = dq[iy, ix].copy()
        else:
            fx0, fy0 = np.floor(xi), np.floor(yi)
            offx, wx = _taps(kernel, (xi - fx0).astype(np.float32))
            offy, wy = _taps(kernel, (yi - fy0).astype(np.float32))
            ix0, iy0 = fx0.astype(np.int64), fy0.astype(np.int64)
            for oy, wyk in zip(offy, wy):
                iy = np.clip(iy0 + oy, 0, ny_in - 1)
                for ox, wxk in zip(offx, wx):
                    ix = np.clip(ix0 + ox, 0, nx_in - 1)
                    w = wyk * wxk
                    s += w * sci[iy, ix]
                    if var is not None:
                        v += w * w * var[iy, ix]
                    if dq is not None:
                        d |= np.where(w != 0, dq[iy, ix], 0).astype(np.uint16)
        sl = (slice(y0 + r0, y0 + r1), slice(c0, c1))
        if det != 1.0:
            s *= np.float32(det)
            if var is not None:
                v *= np.float32(det * det)
        np.copyto(out_sci[sl], s, where=inside)
        if var is not None:
            np.copyto(out_var[sl], v, where=inside)
        np.copyto(out_dq[sl], d, where=inside)

    starts = range(0, ny_out, band_rows)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(band, starts))
    else:
        for y0 in starts:
            band(y0)
    return out_sci, out_var, out_dq
