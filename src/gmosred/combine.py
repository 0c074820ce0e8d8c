"""One combine engine for everything that stacks images (bias, flats, fringe frames, stacks).

Inputs are *band providers*: callables ``provider(y0, y1) -> Band`` that return rows y0:y1 of one
input plane (SCI, and VAR and DQ when the input has them). The engine works through the plane in
row bands, so memory is bounded by ``band_mb`` however many inputs there are, and runs bands on
``threads`` threads (numpy releases the GIL).

Per pixel: input values are scaled and offset (``value * scale + offset``), pixels with a
"fail" DQ bit are ignored, outliers are rejected, and the rest are averaged (optionally weighted)
or medianed. Rejection:

* ``none``;
* ``minmax``: the ``nlow`` lowest and ``nhigh`` highest valid values;
* ``sigclip``: beyond ``lsigma``/``hsigma`` standard deviations of the kept values about a
  centre, iterated up to ``maxiters`` times (with ``center="mean"`` and ``maxiters=1``,
  astropy's ``sigma_clip`` as ccdproc uses it);
* ``avsigclip``: as sigclip, but with the standard deviation averaged along each row of the band
  (IRAF's idea: a precise sigma even from few inputs), scaled by sqrt(level / row mean level) where
  the signal dominates the noise;
* ``varclip``: with each input's own VAR as its sigma (a CCD noise model: read noise and Poisson;
  DRAGONS' varclip, IRAF's ccdclip). Needs input VAR.

The clipping centre is robust to an outlier from the first pass: ``trimmed`` (default) is the
mean without the lowest and highest value in the first pass (the median for 3 or 4 values, and as
robust to one outlier as IRAF's median centre at a tenth of its cost), then the mean of the kept
values; ``median`` is the median of the kept values at every pass; ``mean`` the plain mean.
``nkeep`` is the fewest values a pixel keeps: a rejection step that would leave fewer is not
applied to that pixel. Output VAR is ``scatter`` (variance of the kept values / their number, as
IRAF's gemcombine; x pi/2 for a median) or ``propagate`` (from the input VAR planes). Output DQ is
the AND of the inputs' DQ (what is bad in every input stays bad), or their OR over kept values
(``dq="or"``), with NO_DATA where every value was rejected (SCI is then the plain mean).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from . import dq as dqbits

METHODS = ("average", "median")
REJECTIONS = ("none", "minmax", "sigclip", "avsigclip", "varclip")


class Band(NamedTuple):
    sci: np.ndarray
    var: np.ndarray | None = None
    dq: np.ndarray | None = None


@dataclass(frozen=True)
class CombineParams:
    """Combine settings; the defaults are gbias'/gemcombine's: average, avsigclip 3/3, nkeep 1."""

    method: str = "average"
    reject: str = "avsigclip"
    lsigma: float = 3.0
    hsigma: float = 3.0
    maxiters: int = 10
    center: str = "trimmed"  # clipping centre: trimmed, median (IRAF's mclip) or mean (astropy's)
    nlow: int = 1
    nhigh: int = 1
    nkeep: int = 1
    var: str = "scatter"  # scatter | propagate
    dq: str = "and"  # and | or
    band_mb: float = 64.0
    threads: int = 2

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"combine method {self.method!r}: choose from {', '.join(METHODS)}")
        if self.reject not in REJECTIONS:
            raise ValueError(f"rejection {self.reject!r}: choose from {', '.join(REJECTIONS)}")
        if self.center not in ("trimmed", "median", "mean") or self.var not in ("scatter", "propagate") or \
                self.dq not in ("and", "or"):
            raise ValueError("center must be trimmed|median|mean, var scatter|propagate, dq and|or")
        if self.lsigma <= 0 or self.hsigma <= 0 or self.nlow < 0 or self.nhigh < 0 or self.nkeep < 0:
            raise ValueError("sigmas must be positive and nlow, nhigh, nkeep not negative")


@dataclass
class Combined:
    sci: np.ndarray
    var: np.ndarray
    dq: np.ndarray
    nused: np.ndarray  # values kept per pixel


def combine(providers: Sequence[Callable[[int, int], Band]], shape: tuple[int, int], params: CombineParams,
            scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None,
            weights: Sequence[float] | None = None) -> Combined:
    """Combine one plane of several inputs (see the module docstring)."""
    n = len(providers)
    if n == 0:
        raise ValueError("nothing to combine")
    ny, nx = shape
    scales = np.asarray(scales if scales is not None else np.ones(n), np.float32)
    offsets = np.asarray(offsets if offsets is not None else np.zeros(n), np.float32)
    weights = np.asarray(weights, np.float64) if weights is not None else None
    out = Combined(np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, np.uint16),
                   np.empty(shape, np.uint16))
    # about 8 float32 copies of the (n, rows, nx) stack are alive while a band is worked on
    rows = max(1, int(params.band_mb * 1e6 / (n * nx * 4 * 8)))
    bands = [(y0, min(y0 + rows, ny)) for y0 in range(0, ny, rows)]

    def work(b):
        y0, y1 = b
        _combine_band(providers, y0, y1, params, scales, offsets, weights, out)

    if params.threads > 1 and len(bands) > 1:
        with ThreadPoolExecutor(params.threads) as pool:
            list(pool.map(work, bands))
    else:
        for b in bands:
            work(b)
    return out


def combine_arrays(arrays: Sequence[np.ndarray], params: CombineParams, variances=None, dqs=None, **kw) -> Combined:
    """Convenience: combine in-memory 2-D arrays."""
    def provider(k):
        return lambda y0, y1: Band(arrays[k][y0:y1], None if variances is None else variances[k][y0:y1],
                                   None if dqs is None else dqs[k][y0:y1])
    return combine([provider(k) for k in range(len(arrays))], arrays[0].shape, params, **kw)


def _combine_band(providers, y0, y1, p: CombineParams, scales, offsets, weights, out: Combined) -> None:
    got = [prov(y0, y1) for prov in providers]
    n = len(got)
    data = np.stack([g.sci for g in got]).astype(np.float32, copy=False)
    data *= scales[:, None, None]
    data += offsets[:, None, None]
    has_var = all(g.var is not None for g in got)
    var = np.stack([g.var for g in got]).astype(np.float32) * (scales**2)[:, None, None] if has_var else None
    has_dq = all(g.dq is not None for g in got)
    dqs = np.stack([g.dq for g in got]) if has_dq else None
    keep = (dqs & dqbits.FAIL) == 0 if has_dq else np.ones(data.shape, bool)
    keep &= np.isfinite(data)

    if n < 2:
        pass  # one input: nothing to reject against
    elif p.reject == "minmax":
        keep = _minmax(data, keep, p)
    elif p.reject in ("sigclip", "avsigclip", "varclip"):
        if p.reject == "varclip" and var is None:
            raise ValueError("varclip rejection needs input VAR planes")
        keep = _clip(data, var, keep, p)

    nk = keep.sum(axis=0)
    empty = nk == 0
    if p.method == "average":
        kept = np.where(keep, data, np.float32(0))
        if weights is None:
            sci = kept.sum(axis=0, dtype=np.float64) / np.maximum(nk, 1)
        else:
            w = weights[:, None, None].astype(np.float32)
            wsum = (keep * w).sum(axis=0, dtype=np.float64)
            sci = (kept * w).sum(axis=0, dtype=np.float64) / np.where(wsum > 0, wsum, 1.0)
    else:
        sci = np.nanmedian(np.where(keep, data, np.nan), axis=0) if not empty.all() else np.zeros(data.shape[1:])
    if empty.any():
        sci = np.where(empty, np.nanmean(np.where(np.isfinite(data), data, np.nan), axis=0), sci)

    if p.var == "propagate":
        if var is None:
            raise ValueError("VAR propagation needs input VAR planes")
        if p.method == "average":
            w = keep if weights is None else keep * weights[:, None, None]
            wsum = w.sum(axis=0, dtype=np.float64)
            v = (np.where(keep, var, 0) * w * w).sum(axis=0, dtype=np.float64) / np.where(wsum > 0, wsum, 1.0) ** 2
        else:
            v = np.where(keep, var, 0).sum(axis=0) / np.maximum(nk, 1) ** 2 * (math.pi / 2)
    else:
        diff = np.where(keep, data - sci.astype(np.float32), 0)
        s2 = (diff * diff).sum(axis=0, dtype=np.float64) / np.maximum(nk - 1, 1)
        v = s2 / np.maximum(nk, 1) * (math.pi / 2 if p.method == "median" else 1.0)
        v = np.where(nk > 1, v, 0.0)

    if has_dq:
        if p.dq == "and":
            dq_out = np.bitwise_and.reduce(dqs, axis=0)
        else:
            dq_out = np.bitwise_or.reduce(np.where(keep, dqs, 0), axis=0).astype(np.uint16)
    else:
        dq_out = np.zeros(data.shape[1:], np.uint16)
    dq_out = np.where(empty, dq_out | dqbits.NO_DATA, dq_out)

    out.sci[y0:y1] = sci
    out.var[y0:y1] = v
    out.dq[y0:y1] = dq_out
    out.nused[y0:y1] = nk


def _minmax(data, keep, p: CombineParams):
    """Reject the nlow lowest and nhigh highest valid values (fewer where nkeep would not be met)."""
    n = data.shape[0]
    filled = np.where(keep, data, np.inf)
    order = np.argsort(filled, axis=0, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(n)[:, None, None], axis=0)
    nvalid = keep.sum(axis=0)
    nlow, nhigh = p.nlow, p.nhigh
    ok = nvalid - nlow - nhigh >= max(p.nkeep, 1)
    new = keep & (ranks >= nlow) & (ranks < nvalid - nhigh)
    return np.where(ok, new, keep)


def _clip(data, var, keep, p: CombineParams):
    """Iterative sigma clipping of kept values (sigclip, avsigclip or varclip).

    After the first pass only the pixels that lost a value are looked at again (their centre and,
    for sigclip, their sigma change; nothing else does), so later iterations cost little.
    """
    n = data.shape[0]
    d = data.reshape(n, -1)
    k = keep.reshape(n, -1)
    v = var.reshape(n, -1) if var is not None else None
    idx = None  # pixels still being clipped (None: all)
    fixed_sigma = None
    for _ in range(max(p.maxiters, 1)):
        dd = d if idx is None else d[:, idx]
        kk = k if idx is None else k[:, idx]
        nk = kk.sum(axis=0)
        center = _center(dd, kk, nk, p.center, first=idx is None)
        if p.reject == "varclip":
            sigma = np.sqrt(np.maximum(v if idx is None else v[:, idx], 0))
        elif p.reject == "avsigclip":
            if fixed_sigma is None:
                fixed_sigma = _row_average_sigma(dd, kk, nk, center, data.shape[1:])
            sigma = fixed_sigma if idx is None else fixed_sigma[idx]
        else:
            mean = _center(dd, kk, nk, "mean")
            dev0 = np.where(kk, dd - mean, 0)
            sigma = np.sqrt((dev0 * dev0).sum(axis=0) / np.maximum(nk, 1))  # ddof=0, as astropy's sigma_clip
        dev = dd - center
        reject = kk & ((dev < -p.lsigma * sigma) | (dev > p.hsigma * sigma))
        reject &= (nk - reject.sum(axis=0) >= max(p.nkeep, 1))[None]
        changed = reject.any(axis=0)
        if idx is None:
            k &= ~reject
            idx = np.flatnonzero(changed)
        else:
            k[:, idx] = kk & ~reject
            idx = idx[changed]
        if idx.size == 0:
            break
    return k.reshape(keep.shape)


def _center(data, keep, nk, how, first=False):
    if how == "trimmed" and first:
        lo = np.where(keep, data, np.inf).min(axis=0)
        hi = np.where(keep, data, -np.inf).max(axis=0)
        total = np.where(keep, data, 0).sum(axis=0, dtype=np.float64)
        trimmed = (total - lo - hi) / np.maximum(nk - 2, 1)
        return np.where(nk > 2, trimmed, total / np.maximum(nk, 1)).astype(np.float32)
    if how == "median":
        if keep.all():
            return np.median(data, axis=0)
        return np.nanmedian(np.where(keep, data, np.nan), axis=0).astype(np.float32)
    return (np.where(keep, data, 0).sum(axis=0, dtype=np.float64) / np.maximum(nk, 1)).astype(np.float32)


def _row_average_sigma(d, keep, nk, center, shape):
    """IRAF avsigclip: per-pixel variances averaged along each row (pixels whose variance is far
    above the row's median, i.e. holding an outlier, left out), scaled with the level where the
    signal dominates the noise. Returns one sigma per pixel (flattened)."""
    rows, cols = shape
    dev = np.where(keep, d - center, 0)
    v = ((dev * dev).sum(axis=0) / np.maximum(nk - 1, 1)).reshape(rows, cols)
    good = (nk > 1).reshape(rows, cols)
    med = np.median(np.where(good, v, np.inf), axis=1, keepdims=True)
    use = good & (v <= 10 * med)
    count = np.maximum(use.sum(axis=1, keepdims=True), 1)
    vrow = np.where(use, v, 0).sum(axis=1, keepdims=True) / count
    c = center.reshape(rows, cols)
    crow = np.where(use, c, 0).sum(axis=1, keepdims=True) / count
    signal = (crow > 0) & (crow * crow > 25 * vrow)  # level well above the noise: Poisson-dominated
    scale = np.where(signal, np.maximum(c, 0) / np.where(crow > 0, crow, 1), 1.0)
    return np.sqrt(vrow * scale).astype(np.float32).ravel()
