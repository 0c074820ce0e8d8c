"""Absolute astrometry: a frame's sources matched to a reference catalogue and its WCS fitted as TAN-SIP.

1. **Matching that cannot be fooled** (:func:`vote`): the brightest sources against the brightest catalogue
   stars, projected through the header WCS; for every rotation on a grid within ``max_rotation``, the
   offsets of all source-star pairs within ``max_offset`` are histogrammed, and the highest bin wins.
   Its count is compared with what chance gives (the mean bin count, Poisson) and with the best
   alternative elsewhere: a match that is not significant is refused, with those figures, never used.
2. **Iterative matching** (:func:`fit`): nearest neighbours within a radius that shrinks with the
   residuals, an affine map first, then the WCS.
3. **The WCS** (:func:`fit_tan_sip`): TAN about the header's CRPIX, with the sky's standard coordinates of
   the matched stars fitted as polynomials of the pixel offsets, so that CRVAL, CD and the SIP terms come
   out of one linear least-squares fit, weighted by the centroid and catalogue errors and an intrinsic
   scatter solved for, outliers clipped. The polynomial order is chosen by cross-validation from the
   matches (a frame with few stars, or stars bunched in a corner, gets a linear WCS), and the inverse
   (AP, BP) is fitted for the tools that need it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import GmosredError
from ..params import checked, param
from .fitting import intrinsic_scatter, nearest_pairs

DEG = math.pi / 180.0
MAS = 1.0 / 3.6e6  # degrees


@checked
class AstrometryParams:
    """Matching and the WCS fit."""

    max_offset: float = param(60.0, "largest pointing error searched (arcsec)", low=1.0, high=600.0)
    max_rotation: float = param(2.0, "largest rotation searched (degrees)", low=0.0, high=10.0)
    n_bright: int = param(250, "brightest sources and catalogue stars used for the vote", low=10)
    min_matches: int = param(8, "fewest pairs in the winning vote for a solution", low=3)
    significance: float = param(8.0, "lowest (peak - chance) / sqrt(chance) of the winning vote", low=3.0)
    max_order: int = param(3, "highest SIP order (the order used is chosen from the matches)", low=1, high=5)
    clip: float = param(3.5, "residual clipping (sigma)", low=2.0)


@dataclass
class Solution:
    wcs: object  # astropy WCS (TAN or TAN-SIP), 1-based pixels as FITS
    order: int
    n_matched: int
    n_used: int
    rms_mas: float  # of the stars used, per axis combined: sqrt(mean(dra^2 + ddec^2))
    intrinsic_mas: float
    vote: dict = field(default_factory=dict)
    src_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # matched rows of the sources
    ref_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # matched rows of the catalogue
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    residuals_mas: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (dra cos dec, ddec) per match


#: No solution whose stars scatter by more than this (mas) is believed: centroids are never that poor.
MAX_RMS_MAS = 500.0


class NoSolution(GmosredError):
    """The frame's sources do not match the catalogue significantly; the message says why."""


# ------------------------------------------------------------------ the tangent plane
def project(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic standard coordinates (degrees) of (ra, dec) about (ra0, dec0): FITS TAN's intermediate x, y."""
    a, d = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def deproject(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`project`."""
    x, y = np.radians(np.asarray(xi, float)), np.radians(np.asarray(eta, float))
    d0 = math.radians(dec0)
    den = math.cos(d0) - y * math.sin(d0)
    ra = ra0 + np.degrees(np.arctan2(x, den))
    dec = np.degrees(np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, den)))
    return np.mod(ra, 360.0), dec


# ------------------------------------------------------------------ 1. the vote
def vote(xs, ys, xr, yr, centre, pixel_scale: float, params: AstrometryParams = AstrometryParams()) -> dict:
    """Shift and rotation of the catalogue's pixel positions (``xr, yr`` through the header WCS) onto the
    sources' (``xs, ys``), both brightest first. Returns {rotation (deg), shift (dx, dy), peak, chance,
    significance, alternative}; raises :class:`NoSolution` when the peak is not significant."""
    n = params.n_bright
    xs, ys, xr, yr = (np.asarray(v, float)[:n] for v in (xs, ys, xr, yr))
    if len(xs) < params.min_matches or len(xr) < params.min_matches:
        raise NoSolution(f"{len(xs)} sources and {len(xr)} catalogue stars on the frame: too few to match "
                         f"(at least {params.min_matches} of each)")
    max_shift = params.max_offset / pixel_scale
    radius = max(np.hypot(xs - centre[0], ys - centre[1]).max(), 1.0)
    bin_px = max(2.0, 1.0 / pixel_scale)  # an arcsec, or two pixels
    step = math.degrees(bin_px / radius)  # a rotation step moves the field's edge by one bin at most
    rotations = np.arange(-params.max_rotation, params.max_rotation + step / 2, step) if params.max_rotation else [0.0]
    edges = np.arange(-max_shift, max_shift + bin_px, bin_px)
    best = None
    peaks = []
    u, v = xr - centre[0], yr - centre[1]
    for rot in rotations:
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        xq, yq = centre[0] + c * u - s * v, centre[1] + s * u + c * v
        dx = (xs[:, None] - xq[None, :]).ravel()
        dy = (ys[:, None] - yq[None, :]).ravel()
        near = (np.abs(dx) < max_shift) & (np.abs(dy) < max_shift)
        h, _, _ = np.histogram2d(dx[near], dy[near], bins=(edges, edges))
        # a peak split between neighbouring bins counts whole: sums over 2x2 bins
        h2 = h[:-1, :-1] + h[1:, :-1] + h[:-1, 1:] + h[1:, 1:]
        k = int(np.argmax(h2))
        i, j = np.unravel_index(k, h2.shape)
        peaks.append((float(h2[i, j]), rot, i, j, float(h2.mean())))
        if best is None or h2[i, j] > best[0]:
            sel = near.copy()
            sel[near] = ((dx[near] >= edges[i]) & (dx[near] < edges[i + 2]) & (dy[near] >= edges[j]) & (dy[near] < edges[j + 2]))
            pairs = np.unravel_index(np.flatnonzero(sel), (len(xs), len(xq)))
            best = (float(h2[i, j]), rot, float(np.median(dx[sel])), float(np.median(dy[sel])), float(h2.mean()), i, j,
                    pairs)
    peak, rot, sx, sy, chance, bi, bj, pairs = best
    # the best alternative: the highest peak of any rotation at another shift (nearby rotations see the same
    # solution less sharply: they are not alternatives)
    others = [p for p in peaks if abs(p[2] - bi) > 3 or abs(p[3] - bj) > 3]
    alternative = max((p[0] for p in others), default=0.0)
    chance = max(chance, 0.25)
    significance = (peak - chance) / math.sqrt(chance)
    out = {"rotation": rot, "shift": (sx, sy), "peak": int(peak), "chance": round(chance, 2),
           "significance": round(significance, 1), "alternative": int(alternative), "bin_px": bin_px,
           "pairs": (pairs[0].astype(int), pairs[1].astype(int))}
    if peak < params.min_matches or significance < params.significance or peak < 2 * alternative:
        raise NoSolution(f"no significant match: best {int(peak)} pairs at rotation {rot:+.2f} deg, shift "
                         f"({sx * pixel_scale:+.1f}, {sy * pixel_scale:+.1f}) arcsec, against {chance:.1f} by chance "
                         f"and {int(alternative)} for the best alternative ({len(xs)} sources, {len(xr)} stars)")
    return out


# ------------------------------------------------------------------ 3. TAN-SIP
def _terms(order: int) -> list[tuple[int, int]]:
    return [(p, q) for n in range(order + 1) for p in range(n, -1, -1) for q in [n - p]]


def _design(u, v, order: int) -> np.ndarray:
    return np.stack([u**p * v**q for p, q in _terms(order)], axis=1)


def _scaled(u, v, s: float):
    return np.asarray(u) / s, np.asarray(v) / s


def fit_tan_sip(x, y, ra, dec, sigma_mas, crpix, crval, order: int, clip: float = 3.5, scale_px: float = 1000.0):
    """Fit TAN-SIP of ``order`` (1 = linear) to matched pixels (1-based) and sky positions, with per-star
    errors ``sigma_mas`` (centroid and catalogue, added in quadrature). Returns (wcs, used, residuals_mas,
    intrinsic_mas)."""
    x, y, ra, dec, sigma = (np.asarray(v, float) for v in (x, y, ra, dec, sigma_mas))
    u, v = _scaled(x - crpix[0], y - crpix[1], scale_px)
    a = _design(u, v, order)
    used = np.ones(len(x), bool)
    intrinsic = 0.0
    ra0, dec0 = float(crval[0]), float(crval[1])
    for _ in range(8):
        for _ in range(3):  # CRVAL: where CRPIX lands, refined until the constant term vanishes
            xi, eta = project(ra, dec, ra0, dec0)
            w = 1.0 / (sigma**2 + intrinsic**2)
            sw = np.sqrt(w[used])[:, None]
            cx = np.linalg.lstsq(a[used] * sw, xi[used] * sw[:, 0], rcond=None)[0]
            cy = np.linalg.lstsq(a[used] * sw, eta[used] * sw[:, 0], rcond=None)[0]
            ra0, dec0 = (float(t) for t in deproject(cx[0], cy[0], ra0, dec0))
        xi, eta = project(ra, dec, ra0, dec0)
        rx = (xi - a @ cx) / MAS
        ry = (eta - a @ cy) / MAS
        r2 = rx**2 + ry**2
        # the intrinsic scatter that gives the normalised residuals of a chi^2 with 2 degrees of freedom their
        # median (2 ln 2): robust, so that a crowded field's few mismatched pairs neither set it nor survive it
        target = 2.0 * math.log(2.0) * 2 * used.sum() / max(2 * used.sum() - 2 * a.shape[1], 1)
        intrinsic = intrinsic_scatter(lambda t: float(np.median(r2[used] / (sigma[used] ** 2 + t * t))), target,
                                      max(float(np.sqrt(np.median(r2[used]))), 1e-3) * 10)
        norm = np.sqrt(r2 / (sigma**2 + intrinsic**2))  # a radial deviation in sigma of one axis
        keep = norm < clip
        if (keep == used).all():
            break
        used = keep
        if used.sum() < a.shape[1] + 2:
            raise NoSolution(f"{used.sum()} stars left after clipping: too few for order {order}")
    wcs = _make_wcs(cx, cy, order, crpix, (ra0, dec0), scale_px)
    return wcs, used, np.column_stack([rx, ry]), intrinsic


def _make_wcs(cx, cy, order: int, crpix, crval, scale_px: float):
    """The WCS of the fitted polynomials: CD from the linear terms, SIP A/B = CD^-1 (higher terms), AP/BP fitted."""
    from astropy.wcs import WCS, Sip

    terms = _terms(order)
    lin = {t: k for k, t in enumerate(terms)}
    cd = np.array([[cx[lin[(1, 0)]], cx[lin[(0, 1)]]], [cy[lin[(1, 0)]], cy[lin[(0, 1)]]]]) / scale_px
    w = WCS(naxis=2)
    w.wcs.crpix = list(crpix)
    w.wcs.crval = list(crval)
    w.wcs.cd = cd
    w.wcs.radesys = "ICRS"
    if order < 2:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        return w
    inv = np.linalg.inv(cd)
    a = np.zeros((order + 1, order + 1))
    b = np.zeros((order + 1, order + 1))
    for (p, q), k in lin.items():
        if p + q < 2:
            continue
        # the term's coefficient of the pixel polynomial (u^p v^q in pixels, not scaled)
        f = np.array([cx[k], cy[k]]) / scale_px ** (p + q)
        a[p, q], b[p, q] = inv @ f
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.sip = Sip(a, b, *_inverse_sip(a, b, order, crpix), w.wcs.crpix)
    return w


def _inverse_sip(a, b, order: int, crpix, half: float = 2000.0):
    """AP, BP of one order higher, fitted on a grid over +-``half`` pixels about CRPIX."""
    g = np.linspace(-half, half, 41)
    u, v = np.meshgrid(g, g)
    u, v = u.ravel(), v.ravel()
    fu = u + sum(a[p, q] * u**p * v**q for p in range(order + 1) for q in range(order + 1) if p + q >= 2)
    fv = v + sum(b[p, q] * u**p * v**q for p in range(order + 1) for q in range(order + 1) if p + q >= 2)
    n = order + 1
    terms = [t for t in _terms(n) if sum(t) >= 1]
    s = half
    m = np.stack([(fu / s) ** p * (fv / s) ** q for p, q in terms], axis=1)
    cu = np.linalg.lstsq(m, u - fu, rcond=None)[0]
    cv = np.linalg.lstsq(m, v - fv, rcond=None)[0]
    ap, bp = np.zeros((n + 1, n + 1)), np.zeros((n + 1, n + 1))
    for (p, q), ku, kv in zip(terms, cu, cv):
        ap[p, q], bp[p, q] = ku / s ** (p + q), kv / s ** (p + q)
    return ap, bp


def choose_order(x, y, ra, dec, sigma_mas, crpix, crval, max_order: int, clip: float, folds: int = 5) -> int:
    """The SIP order with the least cross-validated residual (an order is tried only with at least five stars
    per coefficient and the stars spread over the field); a higher order must gain 3% to be taken."""
    n = len(x)
    spread = _spread(x, y)
    best_order, best = 1, None
    rng = np.random.default_rng(0)
    fold = rng.permutation(n) % folds
    for order in range(1, max_order + 1):
        n_coef = len(_terms(order))
        if n < 5 * n_coef or (order > 1 and spread < 0.6):
            break
        err = []
        try:
            for k in range(folds):
                train, test = fold != k, fold == k
                wcs, used, _, _ = fit_tan_sip(x[train], y[train], ra[train], dec[train], sigma_mas[train], crpix, crval,
                                              order, clip)
                pr, pd = wcs.all_pix2world(x[test], y[test], 1)
                d = np.hypot((pr - ra[test]) * np.cos(np.radians(dec[test])), pd - dec[test]) / MAS
                err.append(d)
        except (NoSolution, np.linalg.LinAlgError):
            break
        d = np.concatenate(err)
        score = float(np.percentile(d, 68.3))  # the core of the errors: chance pairs and outliers do not decide
        if best is None or score < 0.97 * best:
            best_order, best = order, score
    return best_order


def _spread(x, y, cells: int = 4) -> float:
    """Fraction of a cells x cells grid over the stars' bounding box of the field that holds a star."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) < 2:
        return 0.0
    hx = np.clip(((x - x.min()) / max(np.ptp(x), 1e-9) * cells).astype(int), 0, cells - 1)
    hy = np.clip(((y - y.min()) / max(np.ptp(y), 1e-9) * cells).astype(int), 0, cells - 1)
    return len(set(zip(hx.tolist(), hy.tolist()))) / cells**2


# ------------------------------------------------------------------ 2. the whole fit
def solve(sources, catalog, header_wcs, shape, pixel_scale: float, params: AstrometryParams = AstrometryParams(),
          fwhm_px: float = 3.0) -> Solution:
    """Match ``sources`` (table with X_IMAGE, Y_IMAGE (1-based), X_ERR, FLUX_APER, FLAGS) to ``catalog`` (ra, dec,
    ra_error, dec_error at the frame's epoch, and a magnitude to rank by) and fit the WCS."""
    from scipy.spatial import cKDTree

    ny, nx = shape
    xs, ys = np.asarray(sources["X_IMAGE"], float), np.asarray(sources["Y_IMAGE"], float)
    ra, dec = np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float)
    xr, yr = header_wcs.all_world2pix(ra, dec, 1)
    margin = params.max_offset / pixel_scale + math.radians(params.max_rotation) * math.hypot(nx, ny) / 2
    on = (xr > -margin) & (xr < nx + margin) & (yr > -margin) & (yr < ny + margin) & np.isfinite(xr)
    # sources ranked by the point-source filter's response (nebular pieces answer to it less than stars do),
    # cosmic rays and hot pixels left out
    from .sources import SHARP

    score = np.asarray(sources["DETECT_SNR"] if "DETECT_SNR" in sources.colnames else sources["FLUX_APER"], float)
    score = np.where((np.asarray(sources["FLAGS"]) & SHARP) != 0, -np.inf, score)
    rank_src = np.argsort(-score)
    rank_src = rank_src[np.isfinite(score[rank_src])]
    mag = _ranking_magnitude(catalog)
    rank_ref = np.flatnonzero(on)[np.argsort(mag[on])]
    # the catalogue stars that can be on the frame: those within it, in its brightness range
    inner = rank_ref[(xr[rank_ref] > 0) & (xr[rank_ref] < nx) & (yr[rank_ref] > 0) & (yr[rank_ref] < ny)]
    # as many sources as the catalogue has stars on the frame, and more when it is sparse (its faintest
    # stars need not be among the brightest sources)
    n_src = min(params.n_bright, len(rank_src), max(3 * len(inner), 30))
    n_ref = min(params.n_bright, len(rank_ref), max(int(1.3 * len(inner)), params.min_matches))
    centre = ((nx + 1) / 2, (ny + 1) / 2)
    wide = dataclasses.replace(params, n_bright=max(n_src, n_ref))
    v = vote(xs[rank_src[:n_src]], ys[rank_src[:n_src]], xr[rank_ref[:n_ref]], yr[rank_ref[:n_ref]], centre,
             pixel_scale, wide)
    # first transform: an affine map fitted (with clipping) to the winning pairs of the vote
    vs, vr = v.pop("pairs")
    src_sel, ref_sel = rank_src[:n_src][vs], rank_ref[:n_ref][vr]
    coef = _affine(xr[ref_sel], yr[ref_sel], xs[src_sel], ys[src_sel])
    full = np.column_stack([xr, yr, np.ones(len(xr))]) @ coef
    xq, yq = full[:, 0], full[:, 1]
    tree = cKDTree(np.column_stack([xs, ys]))
    radius = 2.0 * v["bin_px"]
    ref_ok = np.flatnonzero(on)
    for _ in range(4):  # affine refinements with a radius that only shrinks
        d, k = tree.query(np.column_stack([xq[ref_ok], yq[ref_ok]]), distance_upper_bound=radius)
        hit = np.isfinite(d)
        si, ri = nearest_pairs(k[hit], ref_ok[hit], d[hit])
        if len(si) < params.min_matches:
            raise NoSolution(f"{len(si)} stars matched after the vote ({v['peak']} in it): too few")
        coef = _affine(xr[ri], yr[ri], xs[si], ys[si])
        full = np.column_stack([xr, yr, np.ones(len(xr))]) @ coef
        xq, yq = full[:, 0], full[:, 1]
        resid = np.hypot(xs[si] - xq[ri], ys[si] - yq[ri])
        radius = min(radius, max(4.0 * 1.4826 * float(np.median(resid)), 0.5 * fwhm_px, 1.0))
    # the WCS: pixels of the matched sources against the catalogue's sky
    d, k = tree.query(np.column_stack([xq[ref_ok], yq[ref_ok]]), distance_upper_bound=radius)
    hit = np.isfinite(d)
    si, ri = nearest_pairs(k[hit], ref_ok[hit], d[hit])
    cat_err = np.hypot(_col(catalog, "ra_error", 50.0)[ri], _col(catalog, "dec_error", 50.0)[ri]) / math.sqrt(2)
    pos_err = np.asarray(sources["X_ERR"], float)[si] * pixel_scale * 1000.0  # mas
    sigma = np.hypot(cat_err, pos_err)
    crpix = header_wcs.wcs.crpix
    # start from the affine solution: the sky position of CRPIX through it
    inv = np.linalg.lstsq(np.column_stack([xs[si], ys[si], np.ones(len(si))]),
                          np.column_stack([xr[ri], yr[ri]]), rcond=None)[0]
    hx, hy = np.array([crpix[0], crpix[1], 1.0]) @ inv
    crval = header_wcs.all_pix2world([[hx, hy]], 1)[0]
    order = choose_order(xs[si], ys[si], ra[ri], dec[ri], sigma, crpix, crval, params.max_order, params.clip)
    wcs, used, resid, intrinsic = fit_tan_sip(xs[si], ys[si], ra[ri], dec[ri], sigma, crpix, crval, order, params.clip)
    rms = float(np.sqrt(np.mean((resid[used] ** 2).sum(axis=1))))
    # a solution is believed only if its residuals are those of centroids, not of chance pairs
    limit = min(max(3.0 * float(np.median(sigma)) * math.sqrt(2.0), 0.6 * pixel_scale * 1000.0),
                fwhm_px * pixel_scale * 1000.0 / 2.5, MAX_RMS_MAS)  # never a fraction of the seeing: that is chance
    # and more pairs than chance gives at the final radius
    chance = len(xs) * len(ref_ok) * math.pi * radius**2 / float(nx * ny)
    if len(si) < max(3.0 * chance, params.min_matches):
        raise NoSolution(f"{len(si)} stars matched within {radius * pixel_scale:.2f} arcsec, where chance gives "
                         f"{chance:.0f}: not a solution")
    if rms > limit or used.sum() < max(params.min_matches, 0.5 * len(si)):
        raise NoSolution(f"the fit did not converge: rms {rms:.0f} mas over {int(used.sum())} of {len(si)} matched stars "
                         f"(at most {limit:.0f} mas expected; vote {v['peak']} pairs against {v['chance']} by chance)")
    return Solution(wcs, order, len(si), int(used.sum()), rms, float(intrinsic), v, si, ri, used, resid)


def _affine(x, y, xt, yt, clip: float = 3.0) -> np.ndarray:
    """3x2 affine map (x, y, 1) -> (xt, yt), fitted with iterative clipping."""
    m = np.column_stack([x, y, np.ones(len(x))])
    t = np.column_stack([xt, yt])
    keep = np.ones(len(x), bool)
    for _ in range(5):
        if keep.sum() < 3:
            raise NoSolution("fewer than three pairs left for the first transform")
        coef = np.linalg.lstsq(m[keep], t[keep], rcond=None)[0]
        r = np.hypot(*(t - m @ coef).T)
        s = max(1.4826 * float(np.median(r[keep])), 0.05)
        new = r < clip * s * 1.5
        if (new == keep).all():
            break
        keep = new
    return coef


def _col(table, name: str, default: float) -> np.ndarray:
    if name in table.colnames:
        return np.nan_to_num(np.asarray(table[name], float), nan=default)
    return np.full(len(table), default)


def _ranking_magnitude(catalog) -> np.ndarray:
    for name in ("G", "r", "i", "g", "z"):
        if name in catalog.colnames:
            return np.nan_to_num(np.asarray(catalog[name], float), nan=99.0)
    return np.zeros(len(catalog))
