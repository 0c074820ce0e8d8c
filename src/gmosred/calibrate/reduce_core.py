"""The compiled per-pixel core of the basic reduction (see :mod:`gmosred.calibrate.reduce`).

One pass per CCD plane: bias, Poisson and read noise, saturation on the raw counts, static masks,
flat field and gain, so each pixel is read and written once. Compiled with numba on first use and
cached on disk.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def reduce_plane(c, levels, amp_of_col, gain, noise_var, well, saturated_at, bias, bias_var, bias_dq,
                 flat, flat_var, flat_dq, bpm, unlit, bits, sci, var, dq):
    """One CCD plane.

    ``c``: counts in ADU, overscan subtracted; ``levels[a, y]`` the overscan level of amplifier ``a``
    on row ``y`` (raw counts = c + level); per column: ``amp_of_col``, ``gain`` (e-/ADU), ``noise_var``
    (read noise and overscan level, ADU^2), ``well`` (full well in e-, inf if none). Calibration and
    mask planes may be empty (0 x 0): not applied. ``bits``: SATURATED, BAD_PIXEL, UNILLUMINATED.
    Results into ``sci`` (e-), ``var`` (e-^2) and ``dq``.
    """
    ny, nx = c.shape
    has_bias, has_bias_var, has_bias_dq = bias.size > 0, bias_var.size > 0, bias_dq.size > 0
    has_flat, has_flat_var, has_flat_dq = flat.size > 0, flat_var.size > 0, flat_dq.size > 0
    has_bpm, has_unlit = bpm.size > 0, unlit.size > 0
    saturated, bad, unilluminated = bits[0], bits[1], bits[2]
    zero, one = np.float32(0), np.float32(1)
    for y in range(ny):
        for x in range(nx):
            counts = c[y, x]
            raw = counts + levels[amp_of_col[x], y]
            v = noise_var[x]
            d = 0
            if has_bias:
                counts -= bias[y, x]
                if has_bias_var:
                    v += bias_var[y, x]
                if has_bias_dq:
                    d |= bias_dq[y, x]
            g = gain[x]
            v += max(counts, zero) / g  # Poisson noise of the counts, before flat-fielding
            if raw >= saturated_at or counts * g >= well[x]:
                d |= saturated
            if has_bpm and bpm[y, x]:
                d |= bad
            if has_unlit and unlit[y, x]:
                d |= unilluminated
            f = one
            fv = zero
            if has_flat:
                f = flat[y, x]
                if has_flat_var:
                    fv = flat_var[y, x]
                if has_flat_dq:
                    d |= flat_dq[y, x]
                if not f > 0:
                    f = one
                    d |= bad
            s = counts * g / f
            sci[y, x] = s
            var[y, x] = v * g * g / (f * f) + s * s * fv / (f * f)
            dq[y, x] = d
