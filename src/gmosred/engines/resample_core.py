"""The compiled per-pixel core of the resampling (see :mod:`gmosred.resample` for the rules).

For each output pixel of a band of rows: its input position through the affine map, the kernel's
taps there (edge pixels repeated beyond the input's edge), and SCI, VAR and DQ in one pass.
Compiled with numba on first use and cached on disk; it releases the GIL, so bands run on threads.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

KERNEL_CODES = {"nearest": 0, "linear": 1, "cubic": 2}
_A = np.float32(-0.5)  # Keys' cubic convolution parameter
_1 = np.float32(1)
_2 = np.float32(2)
_3 = np.float32(3)


@njit(cache=True, nogil=True, inline="always")
def _weights(kernel, t, w):
    """The taps' weights along one axis at fraction t (float32); returns the offset of the first tap."""
    if kernel == 1:
        w[0] = _1 - t
        w[1] = t
        return 0
    u = _1 - t
    w[0] = _A * t * (t - _1) * (t - _1)
    w[1] = (_A + _2) * t * t * t - (_A + _3) * t * t + _1
    w[2] = (_A + _2) * u * u * u - (_A + _3) * u * u + _1
    w[3] = _A * u * t * t
    return -1


@njit(cache=True, nogil=True, error_model="numpy")
def resample_rows(sci, var, dq, m, kernel, y0, y1, has_var, has_dq, out_sci, out_var, out_dq):
    """Output rows y0:y1 through the map ``m`` (2x3, output pixel -> input pixel, 0-based centres);
    pixels whose centre maps outside the input are left as they are. ``var``/``dq`` may be empty."""
    ny_in, nx_in = sci.shape
    nx_out = out_sci.shape[1]
    det64 = abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])
    det, det2 = np.float32(det64), np.float32(det64 * det64)
    ntaps = 2 if kernel == 1 else 4
    wx = np.empty(4, np.float32)
    wy = np.empty(4, np.float32)
    for y in range(y0, y1):
        for x in range(nx_out):
            xi = m[0, 0] * x + m[0, 1] * y + m[0, 2]
            yi = m[1, 0] * x + m[1, 1] * y + m[1, 2]
            if not (xi >= -0.5 and xi <= nx_in - 0.5 and yi >= -0.5 and yi <= ny_in - 0.5):
                continue
            s = np.float32(0)
            v = np.float32(0)
            d = 0
            if kernel == 0:
                ix = min(max(int(math.floor(xi + 0.5)), 0), nx_in - 1)
                iy = min(max(int(math.floor(yi + 0.5)), 0), ny_in - 1)
                s = sci[iy, ix]
                if has_var:
                    v = var[iy, ix]
                if has_dq:
                    d = dq[iy, ix]
            else:
                fx = math.floor(xi)
                fy = math.floor(yi)
                ox = _weights(kernel, np.float32(xi - fx), wx)
                oy = _weights(kernel, np.float32(yi - fy), wy)
                for j in range(ntaps):
                    iy = min(max(int(fy) + oy + j, 0), ny_in - 1)
                    for i in range(ntaps):
                        ix = min(max(int(fx) + ox + i, 0), nx_in - 1)
                        w = wy[j] * wx[i]
                        s += w * sci[iy, ix]
                        if has_var:
                            v += w * w * var[iy, ix]
                        if has_dq and w != 0:
                            d |= dq[iy, ix]
            if det64 != 1:
                s *= det
                v *= det2
            out_sci[y, x] = s
            if has_var:
                out_var[y, x] = v
            out_dq[y, x] = d
