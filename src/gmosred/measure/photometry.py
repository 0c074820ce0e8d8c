"""Photometric zero points of a frame against a catalogue, with a colour term and an intrinsic scatter.

Convention (the FITS headers' PHOTZP, PHOTCT, PHOTCOL): a star's catalogue magnitude is

    m = PHOTZP - 2.5 log10(flux_e / EXPTIME) + PHOTCT x (colour)

with flux_e its total electrons in the frame's SCI (the aperture flux times the aperture correction,
measured on the frame's bright stars out to four FWHM) and colour the catalogue's (r - i by default), so
PHOTZP is the AB magnitude of 1 e-/s of a zero-colour star. Broad bands are fitted against the catalogue's
magnitude in the same band. Narrow bands (Ha, HaC, SII...) have no catalogue magnitudes: normal stars'
AB narrow-band magnitudes are the broad band nearest in wavelength plus a term in their colour, which
vanishes for a flat spectrum (AB's definition), so the same fit against ``r`` with a free colour term gives
the narrow band's zero point; emission-line stars fall off it and are clipped.

The fit: weighted least squares of (m_cat - m_inst) on the colour, with each star's error from its
flux error, the catalogue's and an intrinsic scatter solved for so that chi^2 per degree of freedom is
one; outliers clipped; saturated, non-linear, blended and faint stars left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GmosredError
from ..params import checked, param
from .fitting import intrinsic_scatter, nearest_pairs
from .sources import BLENDED, DQ_TOUCHED, EDGE, SATURATED, SHARP

#: Catalogue band to fit each GMOS band against (narrow bands: the broad band they sit in).
REFERENCE_BAND = {"u": "u", "g": "g", "r": "r", "i": "i", "z": "z", "Ha": "r", "HaC": "r", "SII": "r", "OIII": "g",
                  "OIIIC": "g", "HeII": "g", "HeIIC": "g", "CaT": "z", "Z": "z", "Y": "z"}
#: Source flags that keep a star out of the zero point and the aperture correction.
UNCLEAN = SATURATED | BLENDED | DQ_TOUCHED | EDGE | SHARP
NARROW = ("Ha", "HaC", "SII", "OIII", "OIIIC", "HeII", "HeIIC")


@checked
class PhotometryParams:
    """Zero points."""

    colour: str = param("r-i", "catalogue colour of the colour term (two catalogue bands)")
    min_snr: float = param(20.0, "faintest stars used (aperture signal-to-noise)", low=3.0)
    match_radius: float = param(0.5, "catalogue match radius (arcsec)", low=0.05, high=5.0)
    clip: float = param(3.0, "residual clipping (sigma)", low=2.0)
    colour_term: bool = param(True, "fit a colour term (else PHOTCT = 0)")


#: Roughest sky (annulus rms over photon noise) on which a star measures the aperture correction.
FLAT_SKY = 1.08
#: Stars (the brightest on flat sky) that measure the aperture correction, and the fewest it is measured from:
#: the large aperture's sky error and the faint neighbours' light it gathers weigh least on them (with 30, one 4x4
#: frame's correction was 3% high).
APERTURE_STARS = 10


def aperture_correction(sources, rows, fwhm_px: float | None = None) -> tuple[float, float]:
    """(correction, its error): the median ratio of the large aperture's flux to the PSF fit's over the
    :data:`APERTURE_STARS` brightest clean, isolated stars on flat sky among ``rows`` (those matched to a
    catalogue). Isolated: no other source within the large aperture brighter than half a percent of the star, whose
    light the large aperture would add. Flat: the annulus no rougher than :data:`FLAT_SKY` times its photon noise
    (on a nebula the large aperture holds the nebula's structure, which no sky estimate removes). With fewer such
    stars, (1, NaN): the PSF model's own total stands."""
    from scipy.spatial import cKDTree

    from .sources import BIG_APERTURE

    flags = np.asarray(sources["FLAGS"])
    snr = np.asarray(sources["SNR"], float)
    flux = np.asarray(sources["FLUX_PSF"], float)
    x, y = np.asarray(sources["X_IMAGE"], float), np.asarray(sources["Y_IMAGE"], float)
    fw = fwhm_px if fwhm_px else float(np.nanmedian(np.asarray(sources["FWHM_IMAGE"], float)))
    tree = cKDTree(np.column_stack([x, y]))
    rows = np.asarray(rows)
    clean = rows[((flags[rows] & UNCLEAN) == 0) & (snr[rows] > 50)]
    isolated = []
    for i in clean[np.argsort(-flux[clean])]:
        near = tree.query_ball_point([x[i], y[i]], (BIG_APERTURE + 0.5) * fw)
        if all(j == i or flux[j] < 0.005 * flux[i] for j in near):
            isolated.append(i)
        if len(isolated) == 10 * APERTURE_STARS:
            break
    if len(isolated) < 3:
        raise GmosredError(f"{len(isolated)} bright isolated stars: too few for an aperture correction")
    isolated = np.asarray(isolated)
    flatness = np.asarray(sources["SKY_FLATNESS"], float)[isolated]
    flat = isolated[flatness < FLAT_SKY][:APERTURE_STARS]
    if len(flat) < APERTURE_STARS:
        return 1.0, float("nan")
    r = np.asarray(sources["FLUX_BIG"], float)[flat] / flux[flat]
    med = float(np.median(r))
    return med, float(1.2533 * 1.4826 * np.median(np.abs(r - med)) / np.sqrt(len(r)))


@dataclass
class ZeroPoint:
    zp: float
    zp_err: float
    colour_term: float
    colour_term_err: float
    colour: str
    reference_band: str
    n_used: int
    scatter: float  # intrinsic, mag
    rms: float  # of the residuals of the stars used, mag
    narrow: bool
    used: np.ndarray  # rows of the matched pairs used
    residuals: np.ndarray  # per matched pair, mag
    ccd_offsets: dict  # {ccd: median residual}


def fit_zero_point(flux_e, flux_err, colour, cat_mag, cat_err, exptime: float, params: PhotometryParams,
                   colour_term: bool = True) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """(coefficients [zp, ct], their covariance, intrinsic scatter, used, residuals) of
    cat_mag - m_inst = zp + ct x colour."""
    f = np.asarray(flux_e, float)
    m_inst = -2.5 * np.log10(np.maximum(f, 1e-30) / exptime)
    y = np.asarray(cat_mag, float) - m_inst
    err = np.hypot(1.0857 * np.asarray(flux_err, float) / np.maximum(f, 1e-30), np.asarray(cat_err, float))
    c = np.asarray(colour, float)
    a = np.column_stack([np.ones(len(y)), c]) if colour_term else np.ones((len(y), 1))
    used = np.isfinite(y) & np.isfinite(err) & np.isfinite(c)
    scatter = 0.0
    for _ in range(10):
        if used.sum() < a.shape[1] + 2:
            raise GmosredError(f"{used.sum()} catalogue stars usable: too few for a zero point")
        w = 1.0 / (err**2 + scatter**2)
        sw = np.sqrt(w[used])
        coef, *_ = np.linalg.lstsq(a[used] * sw[:, None], y[used] * sw, rcond=None)
        resid = y - a @ coef
        dof = max(used.sum() - a.shape[1], 1)
        scatter = intrinsic_scatter(lambda t: (resid[used] ** 2 / (err[used] ** 2 + t * t)).sum() / dof, 1.0, 1.0)
        keep = np.isfinite(resid) & (np.abs(resid) < params.clip * np.sqrt(err**2 + scatter**2))
        keep &= np.isfinite(c) & np.isfinite(err)
        if (keep == used).all():
            break
        used = keep
    w = 1.0 / (err[used] ** 2 + scatter**2)
    cov = np.linalg.inv((a[used] * w[:, None]).T @ a[used])
    if not colour_term:
        coef, cov = np.array([coef[0], 0.0]), np.array([[cov[0, 0], 0.0], [0.0, 0.0]])
    return coef, cov, float(scatter), used, resid


def zero_point(sources, catalog, src_index, ref_index, band: str, exptime: float, aperture_correction: float,
               params: PhotometryParams = PhotometryParams(), ccd_of=None) -> ZeroPoint:
    """The frame's zero point from matched (source row, catalogue row) pairs. ``ccd_of``: x (1-based) -> CCD, for
    the per-CCD offsets."""
    ref_band = REFERENCE_BAND.get(band)
    if ref_band is None:
        raise GmosredError(f"no catalogue band to calibrate filter {band!r} against")
    b1, _, b2 = params.colour.partition("-")
    for col in (ref_band, b1, b2):
        if col not in catalog.colnames:
            raise GmosredError(f"the photometric catalogue has no {col} magnitudes (needed for {band}: "
                               f"{ref_band}, colour {params.colour})")
    flags = np.asarray(sources["FLAGS"])[src_index]
    snr = np.asarray(sources["SNR"], float)[src_index]
    ok = ((flags & UNCLEAN) == 0) & (snr >= params.min_snr)
    s_i, r_i = np.asarray(src_index)[ok], np.asarray(ref_index)[ok]
    flux = np.asarray(sources["FLUX_PSF"], float)[s_i] * aperture_correction
    ferr = np.asarray(sources["FLUXERR_PSF"], float)[s_i] * aperture_correction
    mag = np.asarray(catalog[ref_band], float)[r_i]
    merr = _err(catalog, ref_band)[r_i]
    colour = np.asarray(catalog[b1], float)[r_i] - np.asarray(catalog[b2], float)[r_i]
    narrow = band in NARROW
    coef, cov, scatter, used, resid = fit_zero_point(flux, ferr, colour, mag, merr, exptime, params,
                                                     colour_term=params.colour_term or narrow)
    # the fit is cat = m_inst + zp + c x colour; the header's convention is cat = PHOTZP + m_inst + PHOTCT x colour
    offsets = {}
    if ccd_of is not None:
        ccd = np.array([ccd_of(x) for x in np.asarray(sources["X_IMAGE"], float)[s_i]])
        for c in sorted(set(ccd[used].tolist())):
            sel = used & (ccd == c)
            if sel.sum() >= 5:
                offsets[int(c)] = float(np.median(resid[sel]))
    full_used = np.zeros(len(src_index), bool)
    full_used[np.flatnonzero(ok)[used]] = True
    full_resid = np.full(len(src_index), np.nan)
    full_resid[np.flatnonzero(ok)] = resid
    return ZeroPoint(float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1]), float(np.sqrt(cov[1, 1])),
                     params.colour, ref_band, int(used.sum()), scatter, float(np.sqrt(np.mean(resid[used] ** 2))),
                     narrow, full_used, full_resid, offsets)


def _err(catalog, band: str) -> np.ndarray:
    name = f"{band}_err"
    if name in catalog.colnames:
        return np.nan_to_num(np.asarray(catalog[name], float), nan=0.05)
    return np.full(len(catalog), 0.02)


def match_sky(ra, dec, cat_ra, cat_dec, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """(source rows, catalogue rows) of the nearest catalogue star within the radius, one source per star."""
    from scipy.spatial import cKDTree

    d0 = float(np.nanmedian(dec))
    cosd = np.cos(np.radians(d0))
    tree = cKDTree(np.column_stack([np.asarray(cat_ra) * cosd, np.asarray(cat_dec)]))
    d, k = tree.query(np.column_stack([np.asarray(ra) * cosd, np.asarray(dec)]), distance_upper_bound=radius_arcsec / 3600)
    hit = np.flatnonzero(np.isfinite(d))
    stars, rows = nearest_pairs(k[hit], hit, d[hit])
    return rows, stars
