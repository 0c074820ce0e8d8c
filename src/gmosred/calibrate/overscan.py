"""Overscan: the bias level of each amplifier, row by row, from its overscan columns.

Modes:

* ``row`` (the default for every detector set, as DRAGONS' ``function="none"``): the mean of each row's
  overscan pixels, with rows that deviate from a running median by more than ``sigma`` replaced by
  that median;
* ``constant``: one sigma-clipped level for the whole amplifier;
* ``chebyshev`` / ``spline``: a fit of the row means with iterative sigma clipping (``order`` is the
  polynomial order, or the number of spline pieces). Fits leave out the CCD's bottom rows (Hamamatsu:
  48 unbinned, from the detector table), as DRAGONS does when asked for a polynomial (its order 6).

Why row by row for Hamamatsu too (DRAGONS' default; Gemini IRAF fitted order 6): a bias that wanders by
a few ADU over a few hundred rows, e.g. a 3 ADU ripple over 300 rows, is not followed by an order-6
Chebyshev over 4224 rows (2.1 ADU rms left in every row), while the row levels follow it and carry only
their own noise, the read noise over the square root of the overscan columns (0.41 ADU rms for 2.2 ADU
read noise and 27 columns; ``tests/test_calibrate.py::test_overscan_follows_a_ripple``), which averages
down in a master bias.

The columns next to the data are contaminated by charge from it (4 for EEV, 5 for e2v DD: the
detector table); they and the outermost column are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..frame.sections import Section
from ..params import checked, param

MODES = ("row", "constant", "chebyshev", "spline", "none")
#: Column skipped at the far edge of the overscan (as DRAGONS: BIASSEC [1:32] -> [2:28] for EEV).
EDGE_COLUMNS = 1
#: Where the detector table has no contamination width (Hamamatsu), skip as many as for EEV.
DEFAULT_CONTAMINATED = 4


@checked
class OverscanParams:
    """How to measure the overscan (one set for every step, so that bias, flats and science agree)."""

    mode: str = param("row", "overscan mode (row: each row's level, DRAGONS' default for every GMOS CCD)",
                      choices=MODES)
    order: int = param(1, "fit order (chebyshev) or number of pieces (spline)", low=0)
    sigma: float = param(3.0, "rejection limit for rows (sigma)", low=0, low_open=True)
    niter: int = param(5, "rejection iterations of the fit", low=0)
    window: int = param(31, "running-median rows for the row mode", low=1)
    skip_rows: int | None = param(None, "bottom rows (unbinned) left out of fits; none: the CCD's bottom rows "
                                        "(Hamamatsu 48)", low=0)
    bottom_rows: str = param("trim", "Hamamatsu's bottom 48 unbinned rows (no light; their bias departs from "
                                     "the overscan): trim them as Gemini IRAF does, or keep them flagged DQ 64",
                             choices=("trim", "flag"))


@dataclass
class Overscan:
    """The measured overscan of one amplifier."""

    mode: str
    levels: np.ndarray  # ADU per data row
    section: Section | None  # overscan pixels used (extension coordinates)
    rms: float  # ADU, scatter of the overscan pixels about the levels
    variance: float  # ADU^2, variance of the subtracted level of one row

    @property
    def mean(self) -> float:
        return float(np.mean(self.levels)) if self.levels.size else 0.0


def fit_skip(params: OverscanParams, bottom_rows: int, first_row: int, ybin: int) -> int:
    """Binned rows at the start of the data left out of a fit: ``skip_rows`` (default: the CCD's bottom
    rows) counted from the CCD's first row; rows already trimmed count as left out."""
    skip = bottom_rows if params.skip_rows is None else params.skip_rows
    return max(0, -(-(skip - first_row) // ybin))


def used_section(biassec: Section, datasec: Section, contaminated: int | None) -> Section:
    """The overscan columns to use: not those next to the data, nor the outermost one."""
    skip = DEFAULT_CONTAMINATED if contaminated is None else contaminated
    if biassec.x1 >= datasec.x2:  # overscan right of the data
        x1, x2 = biassec.x1 + skip, biassec.x2 - EDGE_COLUMNS
    else:  # overscan left of the data
        x1, x2 = biassec.x1 + EDGE_COLUMNS, biassec.x2 - skip
    if x2 - x1 < 2:
        raise ValueError(f"overscan {biassec} has too few columns once {skip}+{EDGE_COLUMNS} are skipped")
    return Section(x1, x2, biassec.y1, biassec.y2)


def measure(pixels: np.ndarray, biassec: Section, datasec: Section, contaminated: int | None,
            params: OverscanParams, ybin: int = 1, *, bottom_rows: int = 0, first_row: int = 0) -> Overscan:
    """Measure the overscan of one raw amplifier ``pixels`` (uint16 or float, full extension).

    ``first_row``: the unbinned CCD row where ``datasec`` starts; ``bottom_rows``: the CCD's rows that fits
    leave out by default.
    """
    ny = datasec.y2 - datasec.y1
    if params.mode == "none":
        return Overscan("none", np.zeros(ny, np.float32), None, 0.0, 0.0)
    sec = used_section(biassec, datasec, contaminated)
    strip = pixels[datasec.y1:datasec.y2, sec.x1:sec.x2].astype(np.float64)
    ncol = strip.shape[1]
    rows = strip.mean(axis=1)
    rows_y = np.arange(ny, dtype=float)
    if params.mode == "row":
        from scipy import ndimage  # here, not at import: the pipeline's start-up stays light

        smooth = ndimage.median_filter(rows, size=min(params.window, ny), mode="nearest")
        resid = rows - smooth
        sd = 1.4826 * np.median(np.abs(resid - np.median(resid)))
        bad = np.abs(resid) > params.sigma * max(sd, 1e-6)
        levels = np.where(bad, smooth, rows)
        pixel_rms = float(np.std(strip[~bad] - levels[~bad, None]))
        variance = pixel_rms**2 / ncol
    else:
        use = rows_y >= fit_skip(params, bottom_rows, first_row, ybin)
        levels, kept = _fit(rows_y, rows, use, params, ny)
        pixel_rms = float(np.std(strip[kept] - levels[kept, None]))
        # the variance of a fitted level: pixel variance over the pixels per fitted parameter
        npar = 1 if params.mode == "constant" else params.order + 1
        variance = pixel_rms**2 * npar / (ncol * max(int(kept.sum()), 1))
    return Overscan(params.mode, levels.astype(np.float32), sec, pixel_rms, float(variance))


def _fit(y: np.ndarray, rows: np.ndarray, use: np.ndarray, params: OverscanParams, ny: int):
    """The fitted levels and the rows kept by the clipping."""
    from numpy.polynomial import chebyshev
    from scipy.interpolate import make_lsq_spline

    keep = use.copy()
    model = np.full(ny, np.median(rows[use]))
    for _ in range(params.niter + 1):
        if params.mode == "constant":
            model = np.full(ny, rows[keep].mean())
        elif params.mode == "chebyshev":
            coef = chebyshev.chebfit(y[keep], rows[keep], params.order)
            model = chebyshev.chebval(y, coef)
        else:  # spline: `order` cubic pieces between evenly spaced knots
            pieces = max(params.order, 1)
            inner = np.linspace(y[keep][0], y[keep][-1], pieces + 1)[1:-1]
            t = np.r_[[y[keep][0]] * 4, inner, [y[keep][-1]] * 4]
            model = make_lsq_spline(y[keep], rows[keep], t, k=3)(y)
        resid = rows - model
        sd = np.std(resid[keep])
        new = use & (np.abs(resid) <= params.sigma * max(sd, 1e-9))
        if (new == keep).all():
            break
        keep = new
    return model, keep
