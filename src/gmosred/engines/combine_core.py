"""The compiled per-pixel core of the combine engine (see :mod:`gmosred.combine` for the rules).

The band is worked through row by row. A first pass streams through each input's row and sums,
per pixel, what the result needs (count, sum, sum of squares, the two lowest and two highest
values, weighted sums, DQ); this is vectorised and costs about a memory read. From the sums come
the first-pass centre and sigma, and with them the answer for every pixel whose extreme values
could not be rejected (the result is then just the sums' mean and scatter). A clipped pixel that
loses only its lowest and/or highest value (most of them) is settled from the sums and extremes
too. Only the other pixels (or medianed ones) are gathered and worked value by value with the
full rules. Compiled with numba on first use and cached on disk; the kernel releases the GIL, so
bands run on threads.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# integer codes of the settings, in the order of ``opts``
METHOD = {"average": 0, "median": 1}
REJECT = {"none": 0, "minmax": 1, "sigclip": 2, "avsigclip": 3, "varclip": 4}
CENTER = {"trimmed": 0, "median": 1, "mean": 2}
VAR = {"scatter": 0, "propagate": 1}
DQ = {"and": 0, "or": 1}


KERNEL = dict(cache=True, nogil=True, error_model="numpy")  # division by zero gives inf, not an exception
INLINE = dict(KERNEL, inline="always")


@njit(**INLINE)
def _median(vals, keep, m, buf):
    """Median of the kept values among the first m (0 if none): insertion sort into buf."""
    c = 0
    for i in range(m):
        if keep[i]:
            v = vals[i]
            j = c
            while j > 0 and buf[j - 1] > v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
            c += 1
    if c == 0:
        return 0.0
    if c % 2 == 1:
        return np.float64(buf[c // 2])
    return np.float64(np.float32((buf[c // 2 - 1] + buf[c // 2]) / np.float32(2)))


@njit(**INLINE)
def _first_center(how, first, nk, total, lo, hi):
    if how == 0 and first and nk > 2:
        return np.float64(np.float32((total - lo - hi) / (nk - 2)))
    return np.float64(np.float32(total / max(nk, 1)))


@njit(**INLINE)
def _sums_sigma(nk, t1, t2):
    """Standard deviation (ddof 0, as astropy's sigma_clip) of nk values from their sum and sum of squares."""
    mean = t1 / max(nk, 1)
    return np.float32(math.sqrt(max(t2 / max(nk, 1) - mean * mean, 0.0)))


@njit(**INLINE)
def _scatter(nk, t1, t2, s):
    """Variance of the mean s of nk values from their scatter about it (sum t1, sum of squares t2)."""
    if nk < 2:
        return 0.0
    s64 = np.float64(s)
    return max(t2 - 2 * s64 * t1 + nk * s64 * s64, 0.0) / (nk - 1) / nk


@njit(**INLINE)
def _outside(d, s, var_i, varclip, lsigma, hsigma):
    if varclip:
        s = np.float32(math.sqrt(max(var_i, 0.0)))
    return d < -lsigma * s or d > hsigma * s


@njit(**INLINE)
def _gather(data, var, dq, scales, offsets, r, x, has_var, has_dq, fail, vals, vvar, vdq, who, keep):
    """Pixel (r, x)'s usable values (finite, no fail bit), scaled, in input order; returns their number."""
    m = 0
    for k in range(data.shape[0]):
        v = data[k, r, x] * scales[k] + offsets[k]
        if _usable(v, dq, k, r, x, has_dq, fail):
            vals[m] = v
            if has_var:
                vvar[m] = var[k, r, x] * scales[k] * scales[k]
            if has_dq:
                vdq[m] = dq[k, r, x]
            who[m] = k
            keep[m] = True
            m += 1
    return m


@njit(**INLINE)
def _reject(vals, vvar, keep, m, t1, t2, lo, hi, sigma, opts, lsigma, hsigma, buf):
    """The rejection rules for one pixel's m values, whose sum, sum of squares, lowest and highest are
    t1, t2, lo, hi; returns the count, sum and sum of squares of the values kept."""
    reject, center, maxiters, nlow, nhigh, nkeep = opts[1], opts[2], opts[3], opts[4], opts[5], opts[6]
    nk = m
    if reject == 1:  # minmax; ties by input order
        if m - nlow - nhigh >= max(nkeep, 1):
            for j in range(m):
                rank = 0
                for i in range(m):
                    if vals[i] < vals[j] or (vals[i] == vals[j] and i < j):
                        rank += 1
                if rank < nlow or rank >= m - nhigh:
                    keep[j] = False
                    nk -= 1
                    t1 -= vals[j]
                    t2 -= np.float64(vals[j]) * vals[j]
        return nk, t1, t2
    varclip = reject == 4
    for it in range(max(maxiters, 1)):
        if center == 1:
            c = np.float32(_median(vals, keep, m, buf))
        else:
            c = np.float32(_first_center(center, it == 0, nk, t1, lo, hi))
        s = np.float32(sigma)
        if reject == 2:  # sigclip: sigma of the kept values
            s = _sums_sigma(nk, t1, t2)
        nrej = 0
        r1 = 0.0
        r2 = 0.0
        for i in range(m):
            if keep[i] and _outside(vals[i] - c, s, vvar[i], varclip, lsigma, hsigma):
                nrej += 1
                r1 += vals[i]
                r2 += np.float64(vals[i]) * vals[i]
        if nrej == 0 or nk - nrej < max(nkeep, 1):
            break
        for i in range(m):
            if keep[i] and _outside(vals[i] - c, s, vvar[i], varclip, lsigma, hsigma):
                keep[i] = False
        nk -= nrej
        t1 -= r1
        t2 -= r2
    return nk, t1, t2


@njit(**INLINE)
def _pixel(vals, vvar, vdq, who, keep, m, nk, t1, t2, weights, opts, dq_and, buf):
    """Value, VAR and DQ of one worked pixel from its kept values (nk of them, sum t1, sum of squares t2;
    value 0 if none)."""
    method, var_mode, dq_mode, weighted = opts[0], opts[7], opts[8], opts[11]
    if nk == 0:
        s = 0.0
    elif method == 1:
        s = _median(vals, keep, m, buf)
    elif weighted:
        total = 0.0
        wsum = 0.0
        for i in range(m):
            if keep[i]:
                w = np.float32(weights[who[i]])
                total += vals[i] * w
                wsum += w
        s = total / wsum
    else:
        s = t1 / nk
    s32 = np.float32(s)
    v = 0.0
    if var_mode == 1:
        total = 0.0
        wsum = 0.0
        for i in range(m):
            if keep[i]:
                w = weights[who[i]] if weighted and method == 0 else 1.0
                total += vvar[i] * w * w
                wsum += w
        if method == 0:
            v = total / (wsum * wsum) if wsum > 0 else total
        else:
            v = total / max(nk, 1) ** 2 * (math.pi / 2)
    else:
        v = _scatter(nk, t1, t2, s32) * (math.pi / 2 if method == 1 else 1.0)
    dqv = dq_and
    if dq_mode == 1:
        dqv = 0
        for i in range(m):
            if keep[i]:
                dqv |= vdq[i]
    return s32, v, dqv


@njit(**KERNEL)
def _row_sigma(centers, variances, counts, out):
    """avsigclip's sigma for each pixel of a row: the row's mean variance (pixels far above the row's
    median variance left out), scaled by level / row level where the signal dominates the noise."""
    nx = centers.shape[0]
    tmp = np.empty(nx)
    for x in range(nx):
        tmp[x] = variances[x] if counts[x] > 1 else np.inf
    med = np.median(tmp)
    vsum = 0.0
    csum = 0.0
    count = 0
    for x in range(nx):
        if counts[x] > 1 and variances[x] <= 10 * med:
            vsum += variances[x]
            csum += centers[x]
            count += 1
    count = max(count, 1)
    vrow = vsum / count
    crow = csum / count
    signal = crow > 0 and crow * crow > 25 * vrow
    for x in range(nx):
        scale = max(centers[x], 0.0) / crow if signal else 1.0
        out[x] = np.float32(math.sqrt(vrow * scale))


@njit(**INLINE)
def _usable(v, dq, k, r, x, has_dq, fail):
    """A value carries signal: finite, and no fail bit in its DQ (branch-free, so loops vectorise)."""
    return (abs(v) < np.inf) & (((dq[k, r, x] & fail) == 0) if has_dq else True)


@njit(**INLINE)
def _finite_mean(data, scales, offsets, r, x):
    """An empty pixel's value: the mean of its finite values whatever their DQ (0 if none)."""
    total = 0.0
    count = 0
    for k in range(data.shape[0]):
        v = data[k, r, x] * scales[k] + offsets[k]
        if abs(v) < np.inf:
            total += v
            count += 1
    return total / count if count else 0.0


# The per-row sums: each streams through every input's row and updates at most three sums, in a
# function of its own, so that the compiler vectorises it (a usable value adds, an unusable one not).

@njit(**KERNEL)
def _moments(data, dq, scales, offsets, r, has_dq, fail, cnt, s1, s2):
    cnt[:] = 0.0
    s1[:] = 0.0
    s2[:] = 0.0
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            use = _usable(v, dq, k, r, x, has_dq, fail)
            vu = np.float64(v) if use else 0.0
            cnt[x] += 1.0 if use else 0.0
            s1[x] += vu
            s2[x] += vu * vu


@njit(**KERNEL)
def _lows(data, dq, scales, offsets, r, has_dq, fail, lo, lo2):
    """Lowest and second lowest usable value (+inf where there is none)."""
    lo[:] = np.inf
    lo2[:] = np.inf
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            v = v if _usable(v, dq, k, r, x, has_dq, fail) else np.float32(np.inf)
            lo2[x] = max(lo2[x] if lo2[x] < v else v, lo[x])
            lo[x] = v if v < lo[x] else lo[x]


@njit(**KERNEL)
def _highs(data, dq, scales, offsets, r, has_dq, fail, hi, hi2):
    """Highest and second highest usable value (-inf where there is none)."""
    hi[:] = -np.inf
    hi2[:] = -np.inf
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            v = v if _usable(v, dq, k, r, x, has_dq, fail) else np.float32(-np.inf)
            hi2[x] = min(hi2[x] if hi2[x] > v else v, hi[x])
            hi[x] = v if v > hi[x] else hi[x]


@njit(**KERNEL)
def _dq_sums(data, dq, scales, offsets, r, fail, dq_and, dq_or):
    """AND of every input's DQ, OR of the usable values' DQ."""
    dq_and[:] = 0xFFFF
    dq_or[:] = 0
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            dq_and[x] &= dq[k, r, x]
            dq_or[x] |= dq[k, r, x] if _usable(v, dq, k, r, x, True, fail) else 0


@njit(**KERNEL)
def _weighted_sums(data, dq, scales, offsets, weights, r, has_dq, fail, sw, swv):
    sw[:] = 0.0
    swv[:] = 0.0
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        wk = np.float32(weights[k])
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            use = _usable(v, dq, k, r, x, has_dq, fail)
            sw[x] += wk if use else np.float32(0)
            swv[x] += v * wk if use else np.float32(0)


@njit(**KERNEL)
def _var_sums(data, var, dq, scales, offsets, weights, r, has_dq, fail, weighted, swwvar):
    """Sum of the usable values' VAR times their squared weight."""
    swwvar[:] = 0.0
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        wv = weights[k] if weighted else 1.0
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            swwvar[x] += var[k, r, x] * sk * sk * wv * wv if _usable(v, dq, k, r, x, has_dq, fail) else 0.0


# Per-row steps on the sums, each a simple loop over the row's pixels.

@njit(**KERNEL)
def _from_sums(cnt, s1, s2, sw, swv, swwvar, dq_and, dq_or, weighted_mean, var_mode, dq_mode, sci, vout, dqout,
               nused):
    """Value, VAR, DQ and count of each pixel of a row with every usable value kept."""
    for x in range(cnt.shape[0]):
        m = cnt[x]
        s = np.float32(swv[x] / sw[x] if weighted_mean else s1[x] / m)
        if var_mode == 1:
            wsum = sw[x] if weighted_mean else m
            v = swwvar[x] / (wsum * wsum)
        else:
            v = _scatter(m, s1[x], s2[x], s)
        sci[x] = s
        vout[x] = v
        dqout[x] = dq_or[x] if dq_mode == 1 else dq_and[x]
        nused[x] = m


@njit(**KERNEL)
def _first_pass(cnt, s1, s2, lo, hi, center, reject, centers, variances, sigma):
    """First-pass clipping centre (unless given: median), variance about it and, for sigclip, sigma."""
    for x in range(cnt.shape[0]):
        m = cnt[x]
        if center != 1:
            centers[x] = _first_center(center, True, m, s1[x], lo[x], hi[x])
        c = centers[x]
        variances[x] = max(s2[x] - 2 * c * s1[x] + m * c * c, 0.0) / max(m - 1, 1)
        if reject == 2:
            sigma[x] = _sums_sigma(m, s1[x], s2[x])


@njit(**KERNEL)
def _candidates(cnt, lo, hi, centers, sigma, lsigma, hsigma, work):
    """Pixels whose lowest or highest value lies beyond the clipping limits."""
    for x in range(cnt.shape[0]):
        c = np.float32(centers[x])
        work[x] = (cnt[x] > 0) & ((lo[x] - c < -lsigma * sigma[x]) | (hi[x] - c > hsigma * sigma[x]))


@njit(**KERNEL)
def _varclip_candidates(data, var, dq, scales, offsets, r, has_dq, fail, centers, lsigma, hsigma, work):
    """Pixels with a value beyond the clipping limits of its own sigma."""
    for k in range(data.shape[0]):
        sk, ok = scales[k], offsets[k]
        for x in range(data.shape[2]):
            v = data[k, r, x] * sk + ok
            out = _outside(v - np.float32(centers[x]), 0.0, var[k, r, x] * sk * sk, True, lsigma, hsigma)
            work[x] |= _usable(v, dq, k, r, x, has_dq, fail) & out


@njit(**INLINE)
def _extremes_only(nk, t1, t2, lo, lo2, hi, hi2, sigma, opts, lsigma, hsigma):
    """sigclip/avsigclip of a pixel from its sums and two lowest and two highest values, when at most
    the lowest and the highest are rejected: returns (done, count, sum, sum of squares) as the value by
    value rules would; done is False when more values might go (the pixel is then worked in full)."""
    reject, center, maxiters, nkeep = opts[1], opts[2], opts[3], opts[6]
    c = np.float32(_first_center(center, True, nk, t1, lo, hi))
    s = np.float32(sigma)
    if reject == 2:
        s = _sums_sigma(nk, t1, t2)
    low = _outside(lo - c, s, 0.0, False, lsigma, hsigma)
    high = _outside(hi - c, s, 0.0, False, lsigma, hsigma)
    if (low and _outside(lo2 - c, s, 0.0, False, lsigma, hsigma)) or \
            (high and _outside(hi2 - c, s, 0.0, False, lsigma, hsigma)):
        return False, nk, t1, t2
    nrej = low + high
    if nrej == 0 or nk - nrej < max(nkeep, 1):
        return True, nk, t1, t2
    r1 = (np.float64(lo) if low else 0.0) + (np.float64(hi) if high else 0.0)
    r2 = (np.float64(lo) * lo if low else 0.0) + (np.float64(hi) * hi if high else 0.0)
    nk, t1, t2 = nk - nrej, t1 - r1, t2 - r2
    if maxiters <= 1:
        return True, nk, t1, t2
    # the second pass: nothing more may go, judged on the new extremes
    c = np.float32(t1 / nk)
    if reject == 2:
        s = _sums_sigma(nk, t1, t2)
    new_lo = lo2 if low else lo
    new_hi = hi2 if high else hi
    done = not (_outside(new_lo - c, s, 0.0, False, lsigma, hsigma) or _outside(new_hi - c, s, 0.0, False, lsigma,
                                                                                  hsigma))
    return done, nk, t1, t2


@njit(**KERNEL)
def combine_band(data, var, dq, scales, offsets, weights, opts, lsigma, hsigma, sci, vout, dqout, nused):
    """Combine a band: ``data`` (n, rows, nx) float32, ``var`` the same or empty, ``dq`` (n, rows, nx)
    uint16 or empty; results into the (rows, nx) planes. ``opts``: method, reject, center, maxiters,
    nlow, nhigh, nkeep, var mode, dq mode, has_var, has_dq, weighted, fail bits, NO_DATA bit."""
    n, rows, nx = data.shape
    method, reject, center, nlow, nhigh, nkeep = opts[0], opts[1], opts[2], opts[4], opts[5], opts[6]
    var_mode, dq_mode, has_var, has_dq, weighted = opts[7], opts[8], opts[9], opts[10], opts[11]
    fail, no_data = opts[12], opts[13]
    clipping = n >= 2 and reject >= 2
    # worked pixels whose extremes alone can go are settled from the sums (unweighted average, scatter VAR,
    # DQ the AND of the inputs: nothing that needs to know which inputs the extremes came from)
    shortcut = (clipping and reject in (2, 3) and center != 1 and method == 0 and not weighted and var_mode == 0
                and dq_mode == 0)
    weighted_mean = weighted and method == 0
    # per-pixel sums of a row
    cnt = np.empty(nx)
    s1 = np.empty(nx)
    s2 = np.empty(nx)
    lo = np.empty(nx, np.float32)
    lo2 = np.empty(nx, np.float32)
    hi = np.empty(nx, np.float32)
    hi2 = np.empty(nx, np.float32)
    sw = np.empty(nx)
    swv = np.empty(nx)
    swwvar = np.empty(nx)
    dq_and = np.empty(nx, np.int64)
    dq_or = np.empty(nx, np.int64)
    centers = np.empty(nx)
    variances = np.empty(nx)
    sigma = np.zeros(nx, np.float32)
    work = np.zeros(nx, np.bool_)
    # one worked pixel's values
    vals = np.empty(n, np.float32)
    vvar = np.zeros(n, np.float32)
    vdq = np.zeros(n, np.int64)
    who = np.empty(n, np.int64)
    keep = np.zeros(n, np.bool_)
    buf = np.empty(n, np.float32)
    dq_and[:] = 0  # stay 0 without input DQ
    dq_or[:] = 0
    for r in range(rows):
        _moments(data, dq, scales, offsets, r, has_dq, fail, cnt, s1, s2)
        _lows(data, dq, scales, offsets, r, has_dq, fail, lo, lo2)
        _highs(data, dq, scales, offsets, r, has_dq, fail, hi, hi2)
        if has_dq:
            _dq_sums(data, dq, scales, offsets, r, fail, dq_and, dq_or)
        if weighted_mean:
            _weighted_sums(data, dq, scales, offsets, weights, r, has_dq, fail, sw, swv)
        if has_var and var_mode == 1:
            _var_sums(data, var, dq, scales, offsets, weights, r, has_dq, fail, weighted_mean, swwvar)
        # every pixel's answer from the sums, as if nothing were rejected
        _from_sums(cnt, s1, s2, sw, swv, swwvar, dq_and, dq_or, weighted_mean, var_mode, dq_mode,
                   sci[r], vout[r], dqout[r], nused[r])
        # the pixels that could lose a value (or need their values) are worked one by one
        work[:] = False
        if clipping:
            if center == 1:  # median centre: needs the values
                for x in range(nx):
                    m = _gather(data, var, dq, scales, offsets, r, x, has_var, has_dq, fail, vals, vvar, vdq, who,
                                keep)
                    centers[x] = _median(vals, keep, m, buf)
                    keep[:m] = False
            _first_pass(cnt, s1, s2, lo, hi, center, reject, centers, variances, sigma)
            if reject == 3:
                _row_sigma(centers, variances, cnt, sigma)
            if reject == 4:  # varclip: each value against its own sigma
                _varclip_candidates(data, var, dq, scales, offsets, r, has_dq, fail, centers, lsigma, hsigma, work)
            else:
                _candidates(cnt, lo, hi, centers, sigma, lsigma, hsigma, work)
        for x in range(nx):
            if not (work[x] or cnt[x] == 0 or method == 1 or
                    (reject == 1 and n >= 2 and cnt[x] - nlow - nhigh >= max(nkeep, 1))):
                continue
            if shortcut and cnt[x] >= 4:  # most worked pixels lose just an extreme value
                done, nk, t1, t2 = _extremes_only(int(cnt[x]), s1[x], s2[x], lo[x], lo2[x], hi[x], hi2[x], sigma[x],
                                                  opts, lsigma, hsigma)
                if done:
                    s = np.float32(t1 / nk)
                    sci[r, x] = s
                    vout[r, x] = _scatter(nk, t1, t2, s)
                    dqout[r, x] = dq_and[x]
                    nused[r, x] = nk
                    continue
            m = _gather(data, var, dq, scales, offsets, r, x, has_var, has_dq, fail, vals, vvar, vdq, who, keep)
            nk, t1, t2 = m, s1[x], s2[x]
            if n >= 2 and reject > 0:
                nk, t1, t2 = _reject(vals, vvar, keep, m, t1, t2, lo[x], hi[x], sigma[x], opts, lsigma, hsigma, buf)
            s, v, d = _pixel(vals, vvar, vdq, who, keep, m, nk, t1, t2, weights, opts, dq_and[x], buf)
            keep[:m] = False
            if nk == 0:
                s = np.float32(_finite_mean(data, scales, offsets, r, x))
                d |= no_data
            sci[r, x] = s
            vout[r, x] = v
            dqout[r, x] = d
            nused[r, x] = nk
