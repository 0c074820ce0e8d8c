"""One combine engine for everything that stacks images (bias, flats, fringe frames, stacks).

Inputs are *band providers*: callables ``provider(y0, y1, out) -> Band`` that return rows y0:y1
of one input plane (SCI, and VAR and DQ when the input has them); ``out`` is a float32 buffer of
the band's shape that the provider may fill and return as its SCI (saving a copy and fresh
memory). The engine works through the plane in row bands, so memory is bounded by ``band_mb``
however many inputs there are, and runs bands on ``threads`` threads, each with its own buffers;
the per-pixel work is a compiled kernel (:mod:`gmosred.combine_core`).

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
(``dq="or"``), with NO_DATA where no value was kept (SCI is then the mean of the finite values, or 0).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..frame import dq as dqbits
from ..params import checked, param

METHODS = ("average", "median")
MIN_BAND_ROWS = 32
REJECTIONS = ("none", "minmax", "sigclip", "avsigclip", "varclip")


class Band(NamedTuple):
    sci: np.ndarray
    var: np.ndarray | None = None
    dq: np.ndarray | None = None


@checked
class CombineParams:
    """Combine settings; the defaults are gbias'/gemcombine's: average, avsigclip 3/3, nkeep 1."""

    method: str = param("average", "combine the kept values by their average or median", choices=METHODS)
    reject: str = param("avsigclip", "rejection of outliers", choices=REJECTIONS)
    lsigma: float = param(3.0, "lower rejection limit (sigma)", low=0, low_open=True)
    hsigma: float = param(3.0, "upper rejection limit (sigma)", low=0, low_open=True)
    maxiters: int = param(10, "rejection iterations at most", low=1)
    center: str = param("trimmed", "clipping centre: trimmed, median (IRAF's mclip) or mean (astropy's)",
                        choices=("trimmed", "median", "mean"))
    nlow: int = param(1, "lowest values rejected (minmax)", low=0)
    nhigh: int = param(1, "highest values rejected (minmax)", low=0)
    nkeep: int = param(1, "values kept at least per pixel", low=0)
    var: str = param("scatter", "output VAR from the scatter of the kept values or from the inputs' VAR",
                     choices=("scatter", "propagate"))
    dq: str = param("and", "output DQ: bits set in all (and) or any (or) of the kept values", choices=("and", "or"))
    band_mb: float = param(16.0, "memory per band of rows (MB)", low=0, low_open=True, hashed=False)
    threads: int = param(2, "threads working on bands", low=1, hashed=False)


@dataclass
class Combined:
    sci: np.ndarray
    var: np.ndarray
    dq: np.ndarray
    nused: np.ndarray  # values kept per pixel


def combine(providers: Sequence[Callable[[int, int, np.ndarray], Band]], shape: tuple[int, int],
            params: CombineParams, scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None,
            weights: Sequence[float] | None = None) -> Combined:
    """Combine one plane of several inputs (see the module docstring)."""
    from . import combine_core as core

    n = len(providers)
    if n == 0:
        raise ValueError("nothing to combine")
    ny, nx = shape
    p = params
    scales = np.asarray(scales if scales is not None else np.ones(n), np.float32)
    offsets = np.asarray(offsets if offsets is not None else np.zeros(n), np.float32)
    opts = np.array([core.METHOD[p.method], core.REJECT[p.reject], core.CENTER[p.center], p.maxiters, p.nlow,
                     p.nhigh, p.nkeep, core.VAR[p.var], core.DQ[p.dq], 0, 0, weights is not None,
                     dqbits.FAIL, dqbits.NO_DATA], np.int64)
    weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    out = Combined(np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, np.uint16),
                   np.empty(shape, np.uint16))
    # a band holds the inputs' SCI, VAR and DQ and what the providers make on the way; it costs a
    # provider call per input, so it is not made thinner than MIN_BAND_ROWS rows
    rows = max(MIN_BAND_ROWS, int(p.band_mb * 1e6 / (n * nx * 4 * 3)))
    bands = [(y0, min(y0 + rows, ny)) for y0 in range(0, ny, rows)]
    local = threading.local()  # each thread's stack buffers, reused band after band

    def stack(name, dtype, size):
        buf = getattr(local, name, None)
        if buf is None:
            buf = np.empty(n * rows * nx, dtype)
            setattr(local, name, buf)
        return buf[:size]

    def work(band):
        y0, y1 = band
        size = n * (y1 - y0) * nx
        data = stack("sci", np.float32, size).reshape(n, y1 - y0, nx)
        got = []
        for k, prov in enumerate(providers):
            g = prov(y0, y1, data[k])
            if g.sci is not data[k]:
                data[k] = g.sci
            got.append(g)
        has_var = all(g.var is not None for g in got)
        has_dq = all(g.dq is not None for g in got)
        if p.reject == "varclip" and not has_var:
            raise ValueError("varclip rejection needs input VAR planes")
        if p.var == "propagate" and not has_var:
            raise ValueError("VAR propagation needs input VAR planes")
        var = stack("var", np.float32, size).reshape(data.shape) if has_var else np.empty((0, 0, 0), np.float32)
        dqs = stack("dq", np.uint16, size).reshape(data.shape) if has_dq else np.empty((0, 0, 0), np.uint16)
        for k, g in enumerate(got):
            if has_var:
                var[k] = g.var
            if has_dq:
                dqs[k] = g.dq
        del got
        band_opts = opts.copy()
        band_opts[9:11] = has_var, has_dq
        core.combine_band(data, var, dqs, scales, offsets, weights, band_opts, float(p.lsigma), float(p.hsigma),
                          out.sci[y0:y1], out.var[y0:y1], out.dq[y0:y1], out.nused[y0:y1])

    if p.threads > 1 and len(bands) > 1:
        with ThreadPoolExecutor(p.threads) as pool:
            list(pool.map(work, bands))
    else:
        for band in bands:
            work(band)
    return out


def combine_arrays(arrays: Sequence[np.ndarray], params: CombineParams, variances=None, dqs=None, **kw) -> Combined:
    """Convenience: combine in-memory 2-D arrays."""
    def provider(k):
        return lambda y0, y1, out: Band(arrays[k][y0:y1], None if variances is None else variances[k][y0:y1],
                                        None if dqs is None else dqs[k][y0:y1])
    return combine([provider(k) for k in range(len(arrays))], arrays[0].shape, params, **kw)
