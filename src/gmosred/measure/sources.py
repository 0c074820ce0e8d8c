"""Sources: background and detection on a mosaic plane, robust where nebulosity fills the field.

Detection (DAOFIND's idea, with ``sep`` for the segmentation and deblending): the plane less a background
is filtered with a zero-sum Gaussian of the seeing (a Gaussian less its mean over a box of 1.5 FWHM
radius), which answers to point sources and not to anything smooth on the scale of the box, and divided
by its noise from the VAR plane: the detection image is a signal-to-noise map, thresholded at
``threshold``. The background is measured twice: a coarse ``sep`` mesh for a first detection of the
brighter sources, then, with their footprints (dilated by the seeing) and every DQ-flagged pixel masked, a
normalised Gaussian average two FWHM wide that follows the nebula's filaments without the stars' wings.

Per source: position and its error from a fit of the frame's PSF with a plane of local sky (:mod:`.psf`; a
PSF per CCD of a mosaic, started from ``sep.winpos``' windowed centroids), the PSF flux
from the same fit (the photometry that holds on a nebula), EXTENT, flux in a circular aperture scaled to the
seeing (sky from an annulus) and in a Kron ellipse, FWHM (from the area above half the peak), ellipticity and
flags (:data:`FLAGS`). Which detections are stars is decided where the catalogue tells (:func:`classify`, from
the sources matched to reference stars), not by a fixed rule.
"""
from __future__ import annotations

import numpy as np

from ..frame import dq as dqbits
from ..params import checked, param
from . import psf

#: Source flags (OBJCAT's FLAGS column, bit values).
BLENDED, SATURATED, DQ_TOUCHED, EDGE, EXTENDED, TRUNCATED, SHARP = 1, 2, 4, 8, 16, 32, 64
FLAGS = {BLENDED: "blended (deblended from a neighbour)", SATURATED: "saturated or non-linear pixel in the aperture",
         DQ_TOUCHED: "bad, cosmic-ray or unilluminated pixel in the aperture", EDGE: "aperture touches the edge or a gap",
         EXTENDED: "less compact than the frame's stars (nebular knot or filament, galaxy, blend)",
         TRUNCATED: "aperture truncated by the image edge", SHARP: "sharper than the frame's stars (cosmic ray, hot pixel)"}
#: Radius (FWHM) of the large aperture that measures the aperture correction (a Moffat beta = 3.5 star has
#: 99.9% of its light within it).
BIG_APERTURE = 4.0
#: Inner and outer radii (FWHM) of the annulus that measures each source's local sky.
ANNULUS = (4.5, 6.5)
#: Most annulus pixels a local sky is the median of.
ANNULUS_PIXELS = 400
#: The first pass's nominal seeing (arcsec), before the frame's own is measured.
NOMINAL_SEEING = 0.8
#: Fewest stars a PSF is fitted to.
MIN_PSF_STARS = 8
#: Moffat beta where too few stars fix it (typical of seeing-limited images).
DEFAULT_BETA = 3.5


@checked
class DetectParams:
    """Source detection and photometry."""

    threshold: float = param(5.0, "detection threshold: signal-to-noise of the seeing-matched filter", low=1.0)
    minarea: int = param(3, "minimum pixels above the threshold in the filtered image", low=1)
    background: float = param(2.0, "width of the background average, in FWHM (with the sources masked)", low=0.5)
    deblend_cont: float = param(0.0001, "deblending contrast (1 = no deblending)", low=0.0, high=1.0)
    aperture: float = param(1.5, "radius of the circular aperture, in FWHM", low=0.3, high=10.0)
    psf_radius: float = param(1.5, "radius of the PSF fit (with a plane of local background), in FWHM", low=0.7,
                              high=5.0)
    psf_stars: int = param(40, "bright isolated stars the PSF is fitted to", low=5)


def _native(a: np.ndarray, dtype=np.float32) -> np.ndarray:
    return np.array(a, dtype=np.dtype(dtype).newbyteorder("="), order="C", copy=True)


def detection_image(sub: np.ndarray, var: np.ndarray, fwhm: float) -> np.ndarray:
    """Signal-to-noise of the zero-sum Gaussian filter (sigma = fwhm / 2.355, box radius 1.5 FWHM)."""
    from scipy import ndimage

    s = fwhm / 2.3548
    r = max(2, int(np.ceil(1.5 * fwhm)))
    n = 2 * r + 1
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    g = np.exp(-(xx**2 + yy**2) / (2 * s * s))
    k = g - g.mean()
    conv = ndimage.gaussian_filter(sub, s, truncate=r / s) * np.float32(g.sum())
    conv -= ndimage.uniform_filter(sub, n) * np.float32(g.mean() * n * n)
    conv /= np.sqrt(np.float32((k**2).sum()) * np.maximum(_block_mean(var, 2 * n), np.float32(1e-12)))
    return conv


def _block_mean(a: np.ndarray, block: int) -> np.ndarray:
    """``a`` averaged over blocks of ``block`` pixels and expanded back to its shape (a smooth map, cheaply)."""
    ny, nx = a.shape
    by, bx = -(-ny // block), -(-nx // block)
    pad = np.pad(a, ((0, by * block - ny), (0, bx * block - nx)), mode="edge")
    m = pad.reshape(by, block, bx, block).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    return np.repeat(np.repeat(m, block, axis=0), block, axis=1)[:ny, :nx]


def smooth_background(data: np.ndarray, use: np.ndarray, width: float, fill: np.ndarray) -> np.ndarray:
    """Normalised average of ``data`` over the pixels ``use``, about ``width`` (FWHM) wide; ``fill`` where a whole
    neighbourhood is masked (a big star, a gap)."""
    from scipy import ndimage

    # two passes of a box: a triangle-like weight with the variance of the Gaussian of that FWHM, at the cost of two
    # running sums per axis (a Gaussian filter's cost grows with its width)
    n = max(3, int(round(2.45 * width / 2.3548)) | 1)  # two boxes of n: variance n^2 / 6, the Gaussian's

    def smooth(a):
        return ndimage.uniform_filter(ndimage.uniform_filter(a, n), n)

    num = smooth(np.where(use, data, np.float32(0)))
    den = smooth(use.astype(np.float32))
    out = num / np.maximum(den, np.float32(1e-6))
    thin = den < 0.05
    out[thin] = fill[thin]
    return out


def detect(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, pixel_scale: float,
           params: DetectParams = DetectParams(), fwhm: float | None = None, tiles: np.ndarray | None = None):
    """Sources of one plane (SCI in electrons, VAR, DQ). Returns (table, info): an astropy Table of the sources
    (FITS 1-based pixel positions, SExtractor's column names) and {background, noise, fwhm_px, ...}.

    ``fwhm``: the frame's seeing in pixels where it is known (from the stars matched to a catalogue); without
    it, the narrowest well-populated mode of the first pass's widths. ``tiles``: per column of the plane, the
    CCD it came from (a mosaic), for a PSF per CCD."""
    import sep
    from astropy.table import Table
    from scipy import ndimage

    data, variance, mask, bad, sat, dqn, typical_var = _prepare(sci, var, dq)
    if mask.all():
        return Table(names=_COLUMNS, dtype=[float] * len(_COLUMNS)), {"background": 0.0, "noise": 0.0,
                                                                     "fwhm_px": 0.0, "n_detected": 0}
    # pass 1: coarse background, the brighter sources at the nominal seeing, the frame's seeing from them
    bkg, sub, first, seg, nominal = _first_pass(data, variance, mask, pixel_scale, 10.0, params.minarea)
    if fwhm is None:
        fwhm = _seeing(sub, first, nominal)
    grow = int(2 * np.ceil(fwhm)) | 1
    footprint = ndimage.maximum_filter(seg > 0, size=grow)
    # pass 2: the background with the sources masked, then the detection
    back = smooth_background(data, ~(mask | footprint), params.background * fwhm, bkg.back())
    sub = data - back
    sub[mask] = 0.0
    snr_map = detection_image(sub, variance, fwhm)
    objs, seg = sep.extract(snr_map, params.threshold, err=1.0, mask=mask,
                            minarea=params.minarea, filter_kernel=None, deblend_cont=params.deblend_cont,
                            segmentation_map=True)
    info = {"background": float(np.median(back[~mask][::7])), "noise": float(np.sqrt(typical_var)),
            "fwhm_px": float(fwhm), "n_detected": int(len(objs)), "psf": None}
    if len(objs) == 0:
        return Table(names=_COLUMNS, dtype=[float] * len(_COLUMNS)), info
    x, y = objs["x"], objs["y"]
    sig = fwhm / 2.3548
    # where the PSF fit starts: windowed centroids where they gain over the barycentre (all but the faintest; from
    # the barycentre, undersampled stars on a nebula go astray)
    xw, yw = np.array(x, float), np.array(y, float)
    win = np.flatnonzero(objs["peak"] > 2.0 * params.threshold)
    if len(win):
        wx, wy, _ = sep.winpos(sub, x[win], y[win], np.full(len(win), sig), mask=mask)
        ok = np.isfinite(wx) & np.isfinite(wy) & (np.hypot(wx - x[win], wy - y[win]) <= 0.5 * fwhm)
        xw[win[ok]], yw[win[ok]] = wx[ok], wy[ok]
    # the PSF from the bright isolated stars; its FWHM, sharper than the first estimate, sizes the apertures
    usable = ~(mask | sat)
    stars = _psf_candidates(sub, usable, xw, yw, (objs["flag"] & sep.OBJ_MERGED) != 0, fwhm)
    model = _frame_psf(sub, variance, usable, xw, yw, objs["peak"], stars, fwhm, params.psf_stars)
    if model is not None:
        fwhm, sig = model.fwhm, model.fwhm / 2.3548
        info["fwhm_px"], info["psf"] = float(fwhm), model
    # the PSF fit, per tile where each has stars enough (a mosaic's CCDs differ: their interpolation broadens the
    # stars of some): positions (where it converges: all but the faintest), fluxes against a local plane of sky
    tile = np.zeros(len(x), int) if tiles is None else np.asarray(tiles)[np.clip(np.rint(xw).astype(int), 0,
                                                                                   data.shape[1] - 1)]
    fitted = {}
    for t in np.unique(tile):
        here = tile == t
        local_model = model
        if tiles is not None:
            local_model = _frame_psf(sub, variance, usable, xw, yw, objs["peak"], stars & here, fwhm,
                                     params.psf_stars, start=model) or model
        local_model = local_model or psf.Moffat(fwhm, DEFAULT_BETA)
        part = psf.photometry(data, variance, usable, xw[here], yw[here], local_model, params.psf_radius * fwhm,
                              exclude=(seg, np.flatnonzero(here) + 1))
        for key, val in part.items():
            fitted.setdefault(key, np.full(len(x), np.nan))[here] = val
    moved = np.isfinite(fitted["X_PSF"])
    xw, yw = np.where(moved, fitted["X_PSF"], xw), np.where(moved, fitted["Y_PSF"], yw)
    radius = params.aperture * fwhm
    # photometry against each source's local sky: the median of an annulus, robust to neighbours and to the
    # stars' own wings, following the nebula's gradients (DAOPHOT's way)
    local, local_err, flatness = _annulus_median(data, variance, mask, xw, yw, ANNULUS[0] * fwhm, ANNULUS[1] * fwhm)
    flux, ferr, aflag = sep.sum_circle(data, xw, yw, radius, var=variance, mask=mask, subpix=5)
    big, big_err, _ = sep.sum_circle(data, xw, yw, BIG_APERTURE * fwhm, var=variance, mask=mask, subpix=5)
    # the apertures' unmasked areas: pi r^2, but where a masked pixel or the edge is near
    area, big_area = np.full(len(x), np.pi * radius**2), np.full(len(x), np.pi * (BIG_APERTURE * fwhm) ** 2)
    near = np.flatnonzero(_any_in_box(mask, xw, yw, BIG_APERTURE * fwhm))
    if len(near):
        ones = np.ones_like(data)
        area[near] = sep.sum_circle(ones, xw[near], yw[near], radius, mask=mask, subpix=5)[0]
        big_area[near] = sep.sum_circle(ones, xw[near], yw[near], BIG_APERTURE * fwhm, mask=mask, subpix=5)[0]
    flux, big = flux - local * area, big - local * big_area
    ferr, big_err = np.hypot(ferr, area * local_err), np.hypot(big_err, big_area * local_err)
    a, b, theta = objs["a"].astype(float), objs["b"].astype(float), objs["theta"].astype(float)
    a, b = np.where(np.isfinite(a), np.maximum(a, 0.5), 1.0), np.where(np.isfinite(b), np.maximum(b, 0.5), 1.0)
    a, b = np.maximum(a, b), np.minimum(a, b)
    theta = np.where(np.isfinite(theta), np.clip(theta, -np.pi / 2, np.pi / 2), 0.0)
    kr, _ = sep.kron_radius(sub, x, y, a, b, theta, 6.0, mask=mask)
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, 2.5)
    kscale = np.minimum(np.maximum(2.5 * kr, radius / np.sqrt(a * b)), 50.0)
    kflux, kerr, kf = sep.sum_ellipse(sub, x, y, a, b, theta, kscale, var=variance, mask=mask, subpix=1)
    fitted_ok = np.isfinite(fitted["FLUX_PSF"]) & (fitted["FLUXERR_PSF"] > 0)
    snr_aper = np.where(ferr > 0, flux / np.where(ferr > 0, ferr, 1), 0.0)
    snr = np.where(fitted_ok, fitted["FLUX_PSF"] / np.where(fitted_ok, fitted["FLUXERR_PSF"], 1.0), snr_aper)
    # per axis: the PSF fit's, or a windowed centroid's
    perr = np.where(moved, np.hypot(fitted["XERR_PSF"], fitted["YERR_PSF"]) / np.sqrt(2.0),
                    sig / np.maximum(snr, 1e-3) * np.sqrt(2.0))
    peak, width = _stamp_shape(sub, xw, yw, fwhm)
    sharp = _sharpness(sub, xw, yw)
    flags = np.zeros(len(x), np.int32)
    flags |= np.where(objs["flag"] & sep.OBJ_MERGED, BLENDED, 0)
    flags |= np.where((aflag & sep.APER_TRUNC) | (kf & sep.APER_TRUNC), TRUNCATED, 0)
    ap_bad, ap_sat, edge = _aperture_flags(bad, sat, dqn, xw, yw, radius)
    flags |= np.where(ap_sat, SATURATED, 0) | np.where(ap_bad, DQ_TOUCHED, 0) | np.where(edge, EDGE, 0)
    flags |= np.where(sharp > SHARP_RATIO, SHARP, 0)
    t = Table()
    t["NUMBER"] = np.arange(1, len(x) + 1, dtype=np.int32)
    t["X_IMAGE"], t["Y_IMAGE"] = xw + 1.0, yw + 1.0  # FITS 1-based, as SExtractor and DRAGONS
    t["X_ERR"], t["Y_ERR"] = perr, perr
    t["FLUX_APER"], t["FLUXERR_APER"] = flux, ferr
    t["FLUX_BIG"], t["FLUXERR_BIG"] = big, big_err  # aperture of BIG_APERTURE FWHM: the aperture correction
    t["FLUX_AUTO"], t["FLUXERR_AUTO"] = kflux, kerr
    for key in ("FLUX_PSF", "FLUXERR_PSF", "BACKGROUND_PSF", "CHI2_PSF", "EXTENT", "EXTENT_ERR"):
        t[key] = fitted[key]
    t["FLUX_MAX"] = peak
    t["BACKGROUND"] = local
    t["SKY_FLATNESS"] = flatness
    t["FWHM_IMAGE"] = width
    t["ELLIPTICITY"] = 1.0 - b / a
    t["THETA_IMAGE"] = np.degrees(theta)
    t["SNR"] = snr
    t["DETECT_SNR"] = objs["peak"]  # the point-source filter's peak signal-to-noise
    t["SHARPNESS"] = sharp
    t["FLAGS"] = flags
    t.meta["APERRAD"] = float(radius)
    return t, info


_COLUMNS = ("NUMBER", "X_IMAGE", "Y_IMAGE", "X_ERR", "Y_ERR", "FLUX_APER", "FLUXERR_APER", "FLUX_BIG", "FLUXERR_BIG",
            "FLUX_AUTO", "FLUXERR_AUTO", "FLUX_PSF", "FLUXERR_PSF", "BACKGROUND_PSF", "CHI2_PSF", "EXTENT",
            "EXTENT_ERR", "FLUX_MAX", "BACKGROUND", "SKY_FLATNESS", "FWHM_IMAGE", "ELLIPTICITY", "THETA_IMAGE",
            "SNR", "DETECT_SNR", "SHARPNESS", "FLAGS")


def _stamp_shape(sub: np.ndarray, x, y, fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """Per source: the peak (highest of the 3x3 pixels at the centroid) and the FWHM from the area of the
    pixels above half of it within 2 FWHM (the FWHM as the plane shows it: broadened by the pixel)."""
    ny, nx = sub.shape
    r = max(2, int(np.ceil(2.0 * fwhm)))
    ix = np.clip(np.rint(x).astype(int), r, nx - r - 1)
    iy = np.clip(np.rint(y).astype(int), r, ny - r - 1)
    out_peak = np.empty(len(ix), np.float32)
    out_width = np.empty(len(ix), np.float32)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx**2 + yy**2) <= r * r
    for start in range(0, len(ix), 2000):
        sl = slice(start, start + 2000)
        stamps = sub[iy[sl, None, None] + yy[None], ix[sl, None, None] + xx[None]]
        core = stamps[:, r - 1:r + 2, r - 1:r + 2].reshape(len(stamps), -1).max(axis=1)
        above = ((stamps > 0.5 * core[:, None, None]) & disk[None]).sum(axis=(1, 2))
        out_peak[sl] = core
        out_width[sl] = 2.0 * np.sqrt(above / np.pi)
    return out_peak, out_width


def _sharpness(sub: np.ndarray, x, y) -> np.ndarray:
    """The peak pixel over the mean of its four neighbours: a cosmic ray or hot pixel stands far above them,
    a star sampled by more than a pixel does not."""
    ny, nx = sub.shape
    ix = np.clip(np.rint(x).astype(int), 1, nx - 2)
    iy = np.clip(np.rint(y).astype(int), 1, ny - 2)
    ring = (sub[iy - 1, ix] + sub[iy + 1, ix] + sub[iy, ix - 1] + sub[iy, ix + 1]) / 4.0
    return sub[iy, ix] / np.maximum(ring, 1e-3 * np.abs(sub[iy, ix]) + 1e-12)


def _psf_candidates(sub, usable, x, y, blended, fwhm: float) -> np.ndarray:
    """Sources fit to define the PSF: single (not deblended), not sharp, clear of flagged pixels within 2.5 FWHM
    and of any other detection within 4 FWHM."""
    from scipy.spatial import cKDTree

    if len(x) < 2:
        return np.zeros(len(x), bool)
    near = cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)[0][:, 1]
    cand = (near > 4.0 * fwhm) & ~blended & (_sharpness(sub, x, y) < SHARP_RATIO)
    return cand & ~_any_in_box(~usable, x, y, 2.5 * fwhm)


def _prepare(sci, var, dq):
    """(data, variance, mask, bad, saturated, dq, typical variance): native float32 copies with the unusable pixels
    (DQ-flagged, not finite) masked, zeroed in the data and given the typical variance."""
    import sep

    sep.set_extract_pixstack(5_000_000)
    sep.set_sub_object_limit(4096)
    data = _native(sci)
    dqn = np.zeros(data.shape, np.uint16) if dq is None else np.asarray(dq)
    bad = (dqn & (dqbits.NO_DATA | dqbits.UNILLUMINATED | dqbits.BAD_PIXEL | dqbits.COSMIC_RAY)) != 0
    sat = (dqn & (dqbits.SATURATED | dqbits.NON_LINEAR)) != 0
    mask = bad | ~np.isfinite(data)
    if var is None:
        variance = np.full(data.shape, np.float32(np.var(data[~mask]) if (~mask).any() else 1.0))
    else:
        variance = _native(var)
    mask |= ~np.isfinite(variance) | (variance <= 0)
    typical_var = float(np.median(variance[~mask][::7])) if (~mask).any() else 1.0
    data[mask] = 0.0
    variance[mask] = typical_var
    return data, variance, mask, bad, sat, dqn, typical_var


def _first_pass(data, variance, mask, pixel_scale: float, threshold: float, minarea: int):
    """(sep background, data less it, sources, segmentation, nominal FWHM): the sources above ``threshold`` of the
    point-source filter at the nominal seeing, over a coarse mesh background."""
    import sep

    mesh = max(32, int(round(20.0 / pixel_scale)))
    bkg = sep.Background(data, mask=mask, bw=mesh, bh=mesh, fw=3, fh=3)
    sub = data - bkg.back()
    sub[mask] = 0.0
    nominal = max(NOMINAL_SEEING / pixel_scale, 1.5)
    first, seg = sep.extract(detection_image(sub, variance, nominal), threshold, err=1.0, mask=mask, minarea=minarea,
                             filter_kernel=None, deblend_cont=1.0, segmentation_map=True)
    return bkg, sub, first, seg, nominal


def source_mask(sci, var, dq, pixel_scale: float, threshold: float = 5.0, grow: float = 2.0) -> np.ndarray:
    """Pixels of the plane's sources (above ``threshold`` of the point-source filter), grown by ``grow`` times the
    seeing FWHM, and its unusable pixels: what a measurement of the sky (a fringe, a background) leaves out."""
    from scipy import ndimage

    data, variance, mask, *_ = _prepare(sci, var, dq)
    if mask.all():
        return mask
    _, sub, first, seg, nominal = _first_pass(data, variance, mask, pixel_scale, threshold, 3)
    fwhm = _seeing(sub, first, nominal)
    size = int(2 * np.ceil(grow * fwhm)) | 1
    return ndimage.maximum_filter(seg > 0, size=size) | mask


def _frame_psf(sub, variance, usable, x, y, peak, candidates, fwhm: float, n_stars: int, start=None):
    """The Moffat PSF fitted to the ``n_stars`` brightest ``candidates`` (from ``start``, a PSF, if given); None with
    fewer than :data:`MIN_PSF_STARS`."""
    idx = np.flatnonzero(candidates)
    idx = idx[np.argsort(-peak[idx])][:n_stars]
    if len(idx) < MIN_PSF_STARS:
        return None
    return psf.fit_psf(sub, variance, usable, x[idx], y[idx], fwhm, start=start)


def _seeing(sub: np.ndarray, objs, nominal: float) -> float:
    """The seeing FWHM (pixels) from the first pass: the widths of the sources the point-source filter answers
    to most (highest peak signal-to-noise), cosmic rays (:func:`_sharpness`) left out; their densest mode."""
    if len(objs) < 5:
        return nominal
    keep = _sharpness(sub, objs["x"], objs["y"]) < SHARP_RATIO
    o = objs[keep]
    o = o[np.argsort(-o["peak"])][:150]
    if len(o) < 5:
        return nominal
    _, width = _stamp_shape(sub, o["x"], o["y"], 1.5 * nominal)
    w = np.log(width[(width > 0.8) & np.isfinite(width)])
    if len(w) < 5:
        return nominal
    grid = np.linspace(w.min(), w.max() + 1e-6, 200)
    dens = np.exp(-0.5 * ((grid[:, None] - w[None, :]) / 0.06) ** 2).sum(axis=1)
    return float(np.exp(grid[np.argmax(dens)]))


#: Peak over the mean of its four neighbours above which a source is a cosmic ray or a hot pixel.
SHARP_RATIO = 4.0


def classify(table, stars: np.ndarray) -> float:
    """Flag EXTENDED and SHARP detections by their EXTENT against the known stars' (``stars``: a boolean selection of
    the table, e.g. the sources matched to a reference catalogue): beyond :data:`CLASSIFY_SIGMA` of the stars'
    locus, sigma being the source's error with a floor for the PSF's own variation over the field (the bright
    stars' scatter). Returns the locus."""
    extent = np.asarray(table["EXTENT"], float)
    err = np.asarray(table["EXTENT_ERR"], float)
    snr = np.asarray(table["SNR"], float)
    flags = np.asarray(table["FLAGS"])
    good = stars & (snr > 20) & ((flags & (SATURATED | BLENDED)) == 0) & np.isfinite(extent) & (err > 0)
    if good.sum() < 5:
        return float("nan")
    locus = float(np.median(extent[good]))
    bright = good & (snr > 100)
    floor = EXTENT_FLOOR
    if bright.sum() >= 5:
        floor = max(floor, float(1.4826 * np.median(np.abs(extent[bright] - locus))))
    with np.errstate(invalid="ignore"):
        z = (extent - locus) / np.hypot(err, floor)
    new = flags | np.where(np.isfinite(z) & (z > CLASSIFY_SIGMA), EXTENDED, 0)
    new |= np.where(np.isfinite(z) & (z < -CLASSIFY_SIGMA), SHARP, 0)
    table["FLAGS"] = np.where(stars, flags, new).astype(np.int32)
    return locus


#: Least EXTENT scatter of bright stars (the PSF varies a little over a field).
EXTENT_FLOOR = 0.005
#: How far (in the stars' own scatter) from the stars' locus a detection is called extended or sharp.
CLASSIFY_SIGMA = 3.0


def _annulus_median(data, var, mask, x, y, r_in: float, r_out: float):
    """Per source, over the unmasked pixels of an annulus: the median, its error (sqrt(pi/2) sigma / sqrt(n)) and
    the flatness of the sky there (the pixels' robust rms over their photon noise: 1 on a flat sky, more on a
    nebula's structure)."""
    ny, nx = data.shape
    r = int(np.ceil(r_out))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    rr = np.hypot(xx, yy)
    ring = (rr >= r_in) & (rr <= r_out)
    dy, dx = yy[ring], xx[ring]
    stride = max(1, len(dx) // ANNULUS_PIXELS)  # evenly spread samples: the median to 1.25 sigma / 20
    dy, dx = dy[::stride], dx[::stride]
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    med, err, flat = (np.empty(len(x)) for _ in range(3))
    for start in range(0, len(x), 500):
        sl = slice(start, start + 500)
        py, px = iy[sl, None] + dy[None], ix[sl, None] + dx[None]
        inside = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
        py, px = np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1)
        use = inside & ~mask[py, px]
        vals = np.where(use, data[py, px], np.nan)
        med[sl] = np.nanmedian(vals, axis=1)
        rms = 1.4826 * np.nanmedian(np.abs(vals - med[sl, None]), axis=1)
        n = np.maximum(use.sum(axis=1), 1)
        err[sl] = 1.2533 * rms / np.sqrt(n)
        flat[sl] = rms / np.sqrt(np.maximum(np.nanmedian(np.where(use, var[py, px], np.nan), axis=1), 1e-12))
    return np.nan_to_num(med), np.nan_to_num(err, nan=0.0), flat


def _any_in_box(m: np.ndarray, x, y, radius: float) -> np.ndarray:
    """Per source: any ``m`` pixel within the box of ``radius`` about (x, y), or the box off the plane."""
    ny, nx = m.shape
    r = int(np.ceil(radius))
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    x0, x1 = np.clip(ix - r, 0, nx), np.clip(ix + r + 1, 0, nx)
    y0, y1 = np.clip(iy - r, 0, ny), np.clip(iy + r + 1, 0, ny)
    c = np.zeros((ny + 1, nx + 1), np.int32)
    np.cumsum(np.cumsum(m, axis=0, dtype=np.int32), axis=1, out=c[1:, 1:])
    inside = (ix - r >= 0) & (iy - r >= 0) & (ix + r < nx) & (iy + r < ny)
    return ((c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0]) > 0) | ~inside


def _aperture_flags(bad, sat, dq, x, y, radius):
    """Per source: any bad / saturated / no-data pixel within the aperture's box, or the box off the plane. One
    summed-area table of every flagged pixel finds the sources to look at; their boxes say which kind."""
    ny, nx = bad.shape
    r = int(np.ceil(radius))
    nodata = (dq & dqbits.NO_DATA) != 0
    flagged = np.flatnonzero(_any_in_box(bad | sat, x, y, radius))
    ap_bad, ap_sat, edge = (np.zeros(len(x), bool) for _ in range(3))
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    edge |= (ix - r < 0) | (iy - r < 0) | (ix + r >= nx) | (iy + r >= ny)
    for i in flagged:
        box = (slice(max(iy[i] - r, 0), iy[i] + r + 1), slice(max(ix[i] - r, 0), ix[i] + r + 1))
        nd = nodata[box]
        ap_bad[i] = (bad[box] & ~nd).any()
        ap_sat[i] = sat[box].any()
        edge[i] |= nd.any()
    return ap_bad, ap_sat, edge
