"""The physical model of the simulated run: sky, stars, nebula, optics and detector.

Everything here is deterministic given its inputs; noise is added only in
:mod:`gmosred.simulate.raw`. The model's numbers that are not GMOS facts from
the packaged tables are simulation choices, listed once in the constants below
and written into the truth.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources

import numpy as np
from scipy import ndimage

from .. import instruments
from ..frame.sections import Section
from . import layouts
from . import plan as obsplan

OVERSCAN_COLUMNS = layouts.OVERSCAN_COLUMNS
READ_SPEED, GAIN_SETTING = "slow", "low"
ADC_MAX = 65535
#: The M8 run's detector set (the real program's); ``gmosred simulate --detector`` picks another.
DEFAULT_CAMERA = "gmos-s-eev"
#: The real M8 header (GMOS-S EEV): AMPINTEG of its slow read and the stale GAIN / RDNOISE placeholders.
EEV_M8_HEADER = {"AMPINTEG": 5000, "GAIN": (2.0, 1.9, 1.9), "RDNOISE": (3.2, 3.5, 3.1)}


@dataclass(frozen=True)
class Camera:
    """One detector set as the simulator observes with it (``data/detectors.csv``).

    ``detector`` is the PHU DETECTOR value of the set's real files; the rest are simulation choices: the run
    is moved ``years_after_2006`` into the set's years at its telescope (same nights of the year), its i-band
    fringes are ``fringe_scale`` times EEV's (thicker, deep-depletion CCDs fringe less), and its bottom rows
    (Hamamatsu) carry a bias excess of ``bottom_bias_adu`` that the overscan does not see.
    """

    name: str
    detid: str
    detector: str
    years_after_2006: int
    fringe_scale: float
    bottom_bias_adu: float

    @property
    def detset(self) -> instruments.DetectorSet:
        return instruments.detector_set(self.detid)

    @cached_property
    def amps(self) -> list[layouts.AmpLayout]:
        return layouts.amplifiers(self.detset)

    @property
    def site(self) -> str:
        return self.detset.instrument[-1]  # 'S' or 'N'


@cache
def cameras() -> dict[str, Camera]:
    with (resources.files(__package__) / "data" / "detectors.csv").open(newline="") as f:
        return {r["name"]: Camera(r["name"], r["detid"], r["detector"], int(r["years_after_2006"]),
                                  float(r["fringe_scale"]), float(r["bottom_bias_adu"])) for r in csv.DictReader(f)}


def camera(name: str) -> Camera:
    try:
        return cameras()[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(cameras())}") from None

# ---- simulation choices (not instrument facts) ------------------------------------------
#: Narrow-band zero points relative to r: the ratio of bandwidths (~7 nm vs ~136 nm).
NARROWBAND_ZP_OFFSET = -3.2
#: Extinction (mag per airmass), typical of Cerro Pachon.
EXTINCTION = {"Ha": 0.08, "HaC": 0.08, "SII": 0.08, "r": 0.10, "i": 0.07}
#: Dark-sky surface brightness at zenith (mag/arcsec^2, AB-like).
SKY_MAG = {"Ha": 20.8, "HaC": 20.8, "SII": 20.8, "r": 20.8, "i": 20.0}
#: Broad-band filters collect continuum over this many narrow-band widths.
CONTINUUM_WIDTH = {"Ha": 1.0, "HaC": 1.0, "SII": 1.0, "r": 19.0, "i": 19.0}
#: Emission lines each filter transmits.
LINES = {"Ha": ("Ha",), "HaC": (), "SII": ("SII",), "r": ("Ha", "SII"), "i": ()}
#: Peak surface brightness of the nebula maps (e-/s/arcsec^2 at CCD2, airmass 1).
NEBULA_PEAK = {"Ha": 2500.0, "SII": 600.0, "continuum": 4.0}
MOFFAT_BETA = 3.5
FRINGE_BANDS = ("i",)
#: Fraction of the last data column's signal that leaks into the first overscan columns.
OVERSCAN_LEAK = (0.01, 0.003, 0.001, 0.0003)
#: Relative pixel-to-pixel flat amplitude per band (redder light, less structure).
P2P_SCALE = {"Ha": 1.0, "HaC": 1.0, "SII": 1.0, "r": 0.9, "i": 0.7}
VIGNETTING = 0.06  # fractional fall-off at the corner of the field
#: Cosmic-ray events per unbinned pixel per second (about 2 per cm^2 per minute).
COSMIC_RATE = 6.0e-8
#: Nebula map sampling (arcsec per pixel) and half-size (arcsec E-W, N-S).
NEBULA_PIXEL, NEBULA_HALF = 0.5, (600.0, 270.0)
#: Epoch of the star table's positions (Gaia DR3's) and of the PS1-like catalogue's mean positions.
GAIA_EPOCH, PS1_EPOCH = 2016.0, 2012.0
#: Proper motions (mas/yr, pmra includes cos dec): field stars toward the Galactic centre (mean, dispersion)
#: and the young cluster's common motion with its internal dispersion.
PM_FIELD, PM_FIELD_SIGMA = (-1.5, -4.0), 3.0
PM_CLUSTER, PM_CLUSTER_SIGMA = (1.3, -2.0), 0.4
#: Optical distortion: radial (pincushion) about CCD2's centre, this many arcsec at 200 arcsec from it
#: (exactly a third-order SIP polynomial in the true WCS; the header WCS knows nothing of it).
DISTORTION_ARCSEC_AT_200 = 0.25
#: Colour terms: GMOS broad-band magnitudes = catalogue (PS1-like) magnitude + term x (r - i).
COLOUR_TERM = {"r": 0.035, "i": -0.045}
#: Normal stars' narrow-band AB magnitudes: band = r + slope x (r - i) (zero at a flat spectrum, by the AB
#: definition), less a line excess for Ha emitters (Ha, and a fifth of it in SII).
NARROWBAND_SLOPE = {"Ha": 0.10, "HaC": 0.12, "SII": 0.14}


def _nominal(cam: Camera, ccd_name: str, band: str) -> float:
    """The nominal zero point of one CCD, or of the whole set where the table has no per-CCD value."""
    try:
        return instruments.nominal_zeropoint(ccd_name, band)
    except instruments.UnknownInstrumentError:
        return instruments.nominal_zeropoint(cam.detid, band)


def zero_points(cam: Camera | None = None) -> dict[str, dict[str, float]]:
    """Zero point (mag for 1 e-/s) per band and CCD (1-based), from the nominal table of the detector set."""
    cam = cam or camera(DEFAULT_CAMERA)
    out = {}
    for band in obsplan.FILTERS:
        source = band if band in ("r", "i") else "r"
        offset = 0.0 if band in ("r", "i") else NARROWBAND_ZP_OFFSET
        out[band] = {str(c + 1): _nominal(cam, name, source) + offset for c, name in enumerate(cam.detset.ccd_names)}
    return out


def ccd_sensitivity(band: str, cam: Camera | None = None) -> list[float]:
    """Response of each CCD relative to CCD2, from the per-CCD zero points."""
    zp = zero_points(cam)[band]
    return [10 ** (0.4 * (zp[str(c)] - zp["2"])) for c in (1, 2, 3)]


@dataclass(frozen=True)
class Layout:
    """Pixel layout of the simulated detector at one binning (full-frame ROI)."""

    binning: int
    camera_name: str = DEFAULT_CAMERA

    @property
    def camera(self) -> Camera:
        return camera(self.camera_name)

    @property
    def detector(self) -> instruments.DetectorSet:
        return self.camera.detset

    def amp_columns(self, amp: layouts.AmpLayout) -> slice:
        """The binned columns of a CCD plane that one amplifier reads."""
        return slice(amp.x1 // self.binning, amp.x2 // self.binning)

    @property
    def shape(self) -> tuple[int, int]:
        """Binned (ny, nx) of one CCD's data."""
        ny, nx = self.detector.ccd_shape
        return ny // self.binning, nx // self.binning

    @property
    def pixel_scale(self) -> float:
        return self.detector.pixel_scale * self.binning

    def to_ccd2(self, ccd: int) -> np.ndarray:
        """2x3 affine: CCD (1..3) binned data pixel (x, y), 0-based -> CCD2 binned pixel."""
        b = (self.binning, self.binning)
        return self.detector.placements[ccd - 1].to_ccd2_affine(self.detector.ccd_shape, b)

    def ccd2_center(self) -> tuple[float, float]:
        ny, nx = self.shape
        return (nx - 1) / 2.0, (ny - 1) / 2.0


def true_wcs(layout: Layout, crval: tuple[float, float], pa: float, distortion: float = 0.0,
             offset: tuple[float, float] = (0.0, 0.0)):
    """TAN WCS of CCD2 (binned data pixels, FITS 1-based), for a pointing at CCD2's centre; with a radial
    ``distortion`` (arcsec at 200 arcsec from the centre) as SIP terms: use ``all_world2pix`` with it.
    ``offset``: where CCD2's pixel (0, 0) is in another frame (a mosaic: the CCD2 tile's origin)."""
    from astropy.wcs import WCS, Sip

    s = layout.pixel_scale / 3600.0
    t = math.radians(-pa)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    cx, cy = layout.ccd2_center()
    w.wcs.crpix = [cx + 1.0 + offset[0], cy + 1.0 + offset[1]]
    w.wcs.crval = list(crval)
    # GMOS-S parity, as the real headers: CD = s [[-cos t, sin t], [-sin t, -cos t]], t = -PA
    w.wcs.cd = s * np.array([[-math.cos(t), math.sin(t)], [-math.sin(t), -math.cos(t)]])
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    if distortion:
        # u' = u (1 + k r^2): A_30 = A_12 = B_21 = B_03 = k, with r in binned pixels
        k = distortion / 200.0**3 * layout.pixel_scale**2
        a, b = np.zeros((4, 4)), np.zeros((4, 4))
        a[3, 0] = a[1, 2] = b[2, 1] = b[0, 3] = k
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


def ccd_wcs_cards(layout: Layout, wcs2, ccd: int, x_offset: int) -> dict:
    """Header WCS (CRPIX, CRVAL, CD) of one CCD's raw extension, exact for the affine placement.

    ``x_offset`` is the column of the extension where the data section starts (0 or 32).
    """
    a = layout.to_ccd2(ccd)
    lin, t = a[:, :2], a[:, 2]
    crpix2 = np.asarray(wcs2.wcs.crpix)
    crpix = np.linalg.solve(lin, crpix2 - 1.0 - t) + 1.0 + np.array([x_offset, 0.0])
    cd = np.asarray(wcs2.wcs.cd) @ lin
    return {"CRPIX1": float(crpix[0]), "CRPIX2": float(crpix[1]),
            "CRVAL1": float(wcs2.wcs.crval[0]), "CRVAL2": float(wcs2.wcs.crval[1]),
            "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]), "CD2_1": float(cd[1, 0]), "CD2_2": float(cd[1, 1])}


# ------------------------------------------------------------------ stars
def star_catalog(rng: np.random.Generator, n: int = 12000):
    """Stars over the whole M8 mosaic: positions, r magnitudes and colours, mags in every band."""
    from astropy.table import Table

    half_e, half_n = NEBULA_HALF[0] - 40.0, NEBULA_HALF[1] - 30.0
    east = rng.uniform(-half_e, half_e, n)
    north = rng.uniform(-half_n, half_n, n)
    # a young cluster (NGC 6530-like) east of the centre
    nc = n // 10
    east[:nc] = rng.normal(200.0, 50.0, nc)
    north[:nc] = rng.normal(-20.0, 45.0, nc)
    east, north = np.clip(east, -half_e, half_e), np.clip(north, -half_n, half_n)
    # counts N(<m) ~ 10**(0.3 m) between r = 12 and 24.5
    lo, hi = 10 ** (0.3 * 12.0), 10 ** (0.3 * 24.5)
    r = np.log10(rng.uniform(lo, hi, n)) / 0.3
    ri = np.clip(rng.normal(0.8, 0.35, n), -0.2, 2.5)
    emitter = rng.random(n) < 0.04
    ha_excess = np.where(emitter, rng.uniform(0.5, 2.0, n), 0.0)
    ra, dec = _offsets_to_radec(east, north)
    member = np.zeros(n, bool)
    member[:nc] = True
    pmra = np.where(member, rng.normal(PM_CLUSTER[0], PM_CLUSTER_SIGMA, n), rng.normal(PM_FIELD[0], PM_FIELD_SIGMA, n))
    pmdec = np.where(member, rng.normal(PM_CLUSTER[1], PM_CLUSTER_SIGMA, n), rng.normal(PM_FIELD[1], PM_FIELD_SIGMA, n))
    t = Table()
    t["id"] = np.arange(1, n + 1)
    t["ra"], t["dec"] = ra, dec
    t["pmra"], t["pmdec"] = pmra, pmdec
    t["cluster"] = member
    t["r"] = r
    t["i"] = r - ri
    t["Ha"] = r + NARROWBAND_SLOPE["Ha"] * ri - ha_excess
    t["HaC"] = r + NARROWBAND_SLOPE["HaC"] * ri
    t["SII"] = r + NARROWBAND_SLOPE["SII"] * ri - 0.2 * ha_excess
    t["ha_emitter"] = emitter
    for c in ("ra", "dec"):
        t[c].unit = "deg"
    t["pmra"].unit = t["pmdec"].unit = "mas / yr"
    t.meta["epoch"] = GAIA_EPOCH
    t.meta["comment"] = ("positions at epoch 2016.0 (pmra includes cos dec); r and i in the catalogue's (PS1-like) "
                         "system, the GMOS system adds COLOUR_TERM x (r - i); narrow bands in the GMOS AB system, "
                         "all outside the atmosphere; zero points and extinction in run.json")
    return t


def julian_epoch(start_iso: str) -> float:
    """Julian year of an ISO date-time (a frame's epoch)."""
    from datetime import datetime

    mjd = (datetime.fromisoformat(start_iso) - datetime(1858, 11, 17)).total_seconds() / 86400.0
    return 2000.0 + (mjd - 51544.5) / 365.25


def positions_at(stars, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """Stars' (RA, Dec) in degrees at ``epoch``, moved linearly from the table's epoch by their proper motions."""
    dt = epoch - stars.meta.get("epoch", GAIA_EPOCH)
    dec = np.asarray(stars["dec"], float)
    ra = np.asarray(stars["ra"], float) + np.asarray(stars["pmra"]) * dt / 3.6e6 / np.cos(np.radians(dec))
    return ra, dec + np.asarray(stars["pmdec"]) * dt / 3.6e6


def gmos_magnitudes(stars, band: str) -> np.ndarray:
    """Stars' AB magnitudes in the GMOS filter ``band`` (outside the atmosphere)."""
    m = np.asarray(stars[band], float)
    if band in COLOUR_TERM:
        m = m + COLOUR_TERM[band] * (np.asarray(stars["r"]) - np.asarray(stars["i"]))
    return m


def _offsets_to_radec(east, north):
    w = _tangent_wcs(1.0)
    ra, dec = w.wcs_pix2world(-np.asarray(east), np.asarray(north), 0)
    return ra, dec


def _tangent_wcs(pixel_arcsec: float, shape: tuple[int, int] | None = None):
    """TAN WCS centred on M8 with north up, east left; pixel (0, 0)-centred unless a shape is given."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [obsplan.M8_RA, obsplan.M8_DEC]
    w.wcs.cdelt = [-pixel_arcsec / 3600.0, pixel_arcsec / 3600.0]
    if shape is not None:
        w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    else:
        w.wcs.crpix = [1.0, 1.0]
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    return w


def gaia_catalog(stars, rng: np.random.Generator, limit: float = 21.0):
    """A Gaia DR3-like catalogue: G < ``limit`` (G = r - 0.1 - 0.3 (r - i)), positions at 2016.0 and proper
    motions with DR3-like errors growing with G; 3% of the sources have two-parameter solutions (no proper
    motion, larger position errors). Its column names are Gaia's."""
    from astropy.table import Table

    g = np.asarray(stars["r"]) - 0.1 - 0.3 * (np.asarray(stars["r"]) - np.asarray(stars["i"]))
    sel = np.flatnonzero((g < limit) & (g > 6.0))
    s, g = stars[sel], g[sel]
    n = len(s)
    pos_err = np.clip(0.1 * 10 ** (0.25 * (g - 17.0)), 0.02, None)  # mas
    pm_err = 1.0 * pos_err  # mas/yr
    two_param = rng.random(n) < 0.03
    pos_err = np.where(two_param, 4.0 * pos_err + 0.5, pos_err)
    cosd = np.cos(np.radians(np.asarray(s["dec"])))
    out = Table()
    out["source_id"] = 4000000000000000000 + np.asarray(s["id"], np.int64)
    out["ra"] = np.asarray(s["ra"]) + rng.normal(0, 1, n) * pos_err / 3.6e6 / cosd
    out["dec"] = np.asarray(s["dec"]) + rng.normal(0, 1, n) * pos_err / 3.6e6
    out["ra_error"], out["dec_error"] = pos_err, pos_err
    out["pmra"] = np.where(two_param, np.nan, np.asarray(s["pmra"]) + rng.normal(0, 1, n) * pm_err)
    out["pmdec"] = np.where(two_param, np.nan, np.asarray(s["pmdec"]) + rng.normal(0, 1, n) * pm_err)
    out["pmra_error"] = np.where(two_param, np.nan, pm_err)
    out["pmdec_error"] = np.where(two_param, np.nan, pm_err)
    out["ref_epoch"] = np.full(n, GAIA_EPOCH)
    out["phot_g_mean_mag"] = g + rng.normal(0, 0.003, n)
    for c in ("ra", "dec"):
        out[c].unit = "deg"
    return out


def ps1_catalog(stars, rng: np.random.Generator, bright: float = 14.0, limit: float = 22.5):
    """A Pan-STARRS1-like catalogue: mean positions (epoch 2012, 15 mas noise, no proper motions) and g, r, i, z
    PSF magnitudes (g and z from a simple stellar locus in r - i: only r and i calibrate the simulated filters)
    with errors growing toward the faint end; saturated brighter than ``bright``. PS1's column names."""
    from astropy.table import Table

    sel = np.flatnonzero((np.asarray(stars["r"]) < limit) & (np.asarray(stars["r"]) > bright)
                         & (np.asarray(stars["i"]) > bright))
    s = stars[sel]
    n = len(s)
    ra, dec = positions_at(s, PS1_EPOCH)
    err = 15.0
    out = Table()
    out["objID"] = 100000000000 + np.asarray(s["id"], np.int64)
    out["raMean"] = ra + rng.normal(0, err / 3.6e6, n) / np.cos(np.radians(dec))
    out["decMean"] = dec + rng.normal(0, err / 3.6e6, n)
    ri = np.asarray(s["r"]) - np.asarray(s["i"])
    mags = {"g": np.asarray(s["r"]) + 0.15 + 1.1 * ri, "r": np.asarray(s["r"]), "i": np.asarray(s["i"]),
            "z": np.asarray(s["i"]) - 0.5 * ri}  # g and z from a simple stellar locus in r - i
    for band in ("g", "r", "i", "z"):
        m = mags[band]
        e = np.sqrt(0.008**2 + (0.02 * 10 ** (0.4 * (m - 20.0)))**2)
        out[f"{band}MeanPSFMag"] = m + rng.normal(0, 1, n) * e
        out[f"{band}MeanPSFMagErr"] = e
    return out


def moffat_alpha(fwhm: float, beta: float = MOFFAT_BETA) -> float:
    return fwhm / (2.0 * math.sqrt(2 ** (1.0 / beta) - 1.0))


def add_stars(image: np.ndarray, x, y, flux, fwhm_px: float, beta: float = MOFFAT_BETA) -> None:
    """Add Moffat stars (total ``flux`` each, pixel-integrated by 3x3 sampling) at 0-based (x, y)."""
    x, y, flux = (np.asarray(v, dtype=float) for v in (x, y, flux))
    alpha = moffat_alpha(fwhm_px, beta)
    ny, nx = image.shape
    # stamp radius by brightness: the stamp is renormalised to the total flux, so a short stamp
    # only moves a faint star's far wing (below the noise) into its core
    tiers = ((0.0, 3e3, 2.5 * fwhm_px), (3e3, 2e5, 4.0 * fwhm_px), (2e5, np.inf, min(12.0 * fwhm_px, 80.0)))
    for lo, hi, radius in tiers:
        group = (flux >= lo) & (flux < hi)
        if not group.any():
            continue
        r = int(math.ceil(max(radius, 4.0)))
        gx, gy, gf = x[group], y[group], flux[group]
        ix, iy = np.rint(gx).astype(int), np.rint(gy).astype(int)
        keep = (ix > -r) & (ix < nx + r) & (iy > -r) & (iy < ny + r)
        gx, gy, gf, ix, iy = gx[keep], gy[keep], gf[keep], ix[keep], iy[keep]
        step = max(1, 2_000_000 // (2 * r + 1) ** 2 // 9)  # bounded memory per batch
        for chunk in range(0, len(gx), step):
            s = slice(chunk, chunk + step)
            _add_stamps(image, gx[s], gy[s], gf[s], ix[s], iy[s], r, alpha, beta)


def _add_stamps(image, x, y, flux, ix, iy, r, alpha, beta):
    d = np.arange(-r, r + 1)
    # integrate over the pixel by 3x3 sub-samples where the PSF is under-sampled
    ns = 3 if alpha < 3.0 else 1
    sub = (np.arange(ns) - (ns - 1) / 2.0) / ns
    # offsets of sub-samples from each star centre: (n, S*3) along x and y
    ux = ((ix - x)[:, None, None] + d[None, :, None] + sub[None, None, :]).reshape(len(x), -1) / alpha
    uy = ((iy - y)[:, None, None] + d[None, :, None] + sub[None, None, :]).reshape(len(x), -1) / alpha
    r2 = (uy[:, :, None] ** 2).astype(np.float32) + (ux[:, None, :] ** 2).astype(np.float32)
    r2 += np.float32(1.0)
    prof = r2 ** np.float32(-beta)
    n, S = len(x), 2 * r + 1
    prof = prof.reshape(n, S, ns, S, ns).sum(axis=(2, 4), dtype=np.float64)
    prof *= (flux / prof.sum(axis=(1, 2)))[:, None, None]
    yy = iy[:, None, None] + d[None, :, None]
    xx = ix[:, None, None] + d[None, None, :]
    yy, xx = np.broadcast_to(yy, prof.shape), np.broadcast_to(xx, prof.shape)
    ok = (yy >= 0) & (yy < image.shape[0]) & (xx >= 0) & (xx < image.shape[1])
    np.add.at(image, (yy[ok], xx[ok]), prof[ok])


# ------------------------------------------------------------------ nebula
def _random_field(rng, shape, slope: float, smooth_px: float) -> np.ndarray:
    """Gaussian random field with power spectrum k**-slope, smoothed, unit variance."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = 1.0
    amp = k ** (-slope / 2.0) * np.exp(-(k * smooth_px * 2.0) ** 2)
    amp[0, 0] = 0.0
    noise = rng.normal(size=(shape[0], shape[1] // 2 + 1)) + 1j * rng.normal(size=(shape[0], shape[1] // 2 + 1))
    f = np.fft.irfft2(noise * amp, s=shape)
    return (f - f.mean()) / f.std()


def _add_gaussian(image, xx, yy, cx, cy, sx, sy, theta, peak) -> None:
    """Add an elliptical Gaussian (arcsec units on the map's axes) within 5 sigma of its centre."""
    r = 5.0 * max(sx, sy)
    cols = np.nonzero(np.abs(xx[0] - cx) < r)[0]
    rows = np.nonzero(np.abs(yy[:, 0] - cy) < r)[0]
    if cols.size == 0 or rows.size == 0:
        return
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    x, y = xx[:, box[1]] - cx, yy[box[0], :] - cy
    c, s = math.cos(theta), math.sin(theta)
    u = (x * c + y * s) / sx
    v = (-x * s + y * c) / sy
    image[box] += np.float32(peak) * np.exp(-0.5 * (u * u + v * v))


def nebula_maps(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], object]:
    """Surface-brightness maps (e-/s/arcsec^2 at CCD2, airmass 1) of the Ha and [SII] line emission
    and of the scattered continuum (per narrow-band width), on a north-up tangent grid."""
    ny = int(2 * NEBULA_HALF[1] / NEBULA_PIXEL)
    nx = int(2 * NEBULA_HALF[0] / NEBULA_PIXEL)
    shape = (ny, nx)
    xx = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * NEBULA_PIXEL)[None, :]  # arcsec, west positive
    yy = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * NEBULA_PIXEL)[:, None]
    diffuse = np.zeros(shape, np.float32)
    for _ in range(30):
        cx, cy = rng.uniform(-500, 500), rng.uniform(-230, 230)
        sx, sy = rng.uniform(25, 140, 2)
        _add_gaussian(diffuse, xx, yy, cx, cy, sx, sy, rng.uniform(0, np.pi), rng.uniform(0.2, 1.0))
    # the bright core (Hourglass region) west of the centre
    _add_gaussian(diffuse, xx, yy, -60.0, 15.0, 35.0, 25.0, 0.0, 2.5)
    texture = np.exp(0.5 * _random_field(rng, shape, 2.6, 4.0 / NEBULA_PIXEL)).astype(np.float32)
    filaments = np.abs(_random_field(rng, shape, 3.0, 1.5 / NEBULA_PIXEL)).astype(np.float32)
    filaments = np.clip(1.0 - filaments, 0, None) ** 4
    ha = diffuse * texture + 0.8 * filaments * (diffuse > 0.3)
    sii = 0.6 * diffuse * np.exp(0.3 * _random_field(rng, shape, 2.6, 4.0 / NEBULA_PIXEL)) + 1.5 * filaments * (diffuse > 0.2)
    dust = diffuse ** 1.5  # scattered light follows the dense gas, smoother than the lines
    maps = {"Ha": ha, "SII": sii, "continuum": dust}
    for key, arr in maps.items():
        arr *= NEBULA_PEAK[key] / float(arr.max())
        maps[key] = np.ascontiguousarray(arr, dtype=np.float32)
    return maps, _tangent_wcs(NEBULA_PIXEL, shape)


def nebula_rate(maps: dict[str, np.ndarray], band: str) -> np.ndarray:
    """Nebula surface brightness through one filter (e-/s/arcsec^2 at CCD2, airmass 1)."""
    out = maps["continuum"] * np.float32(CONTINUUM_WIDTH[band])
    for line in LINES[band]:
        out = out + maps[line]
    return out


def sample_map(image: np.ndarray, image_wcs, layout: Layout, ccd: int, wcs2) -> np.ndarray:
    """Bilinear samples of a sky map at the centre of every data pixel of one CCD.

    The CCD-pixel -> map-pixel relation (placement, TAN to TAN over a few arcmin) is affine to
    far better than 0.01 pixel; it is fitted on a grid of exact points and applied at once.
    """
    ny, nx = layout.shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    a = layout.to_ccd2(ccd)
    p2 = pts @ a.T
    world = wcs2.wcs_pix2world(p2, 0)
    mp = image_wcs.wcs_world2pix(world, 0)
    coef, *_ = np.linalg.lstsq(pts, mp, rcond=None)
    resid = np.abs(pts @ coef - mp).max()
    if resid > 0.01:
        raise RuntimeError(f"sky map mapping is not affine to 0.01 px ({resid:.3f})")
    # ndimage works in (row, col): input (ym, xm) = M @ (y, x) + offset
    m = np.array([[coef[1, 1], coef[0, 1]], [coef[1, 0], coef[0, 0]]])
    offset = np.array([coef[2, 1], coef[2, 0]])
    return ndimage.affine_transform(image, m, offset=offset, output_shape=(ny, nx), order=1,
                                    mode="constant", cval=0.0)


def seeing_blur(image: np.ndarray, fwhm_px: float) -> np.ndarray:
    """The sky seen through the atmosphere: a map blurred by the frame's seeing (its Gaussian core; the Moffat
    wings would move a few percent of the light by a few arcsec, which a smooth nebula does not show). Without
    it the bilinear samples of the 0.5 arcsec map would carry kinks sharper than any star."""
    return ndimage.gaussian_filter(image, fwhm_px / 2.3548, mode="nearest")


# ------------------------------------------------------------------ optics and detector
def focal_coords(layout: Layout, ccd: int) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane position (arcsec from CCD2's centre) of every data pixel of one CCD."""
    ny, nx = layout.shape
    a = layout.to_ccd2(ccd)
    x = np.arange(nx, dtype=np.float64)[None, :]
    y = np.arange(ny, dtype=np.float64)[:, None]
    cx, cy = layout.ccd2_center()
    fx = (a[0, 0] * x + a[0, 1] * y + a[0, 2] - cx) * layout.pixel_scale
    fy = (a[1, 0] * x + a[1, 1] * y + a[1, 2] - cy) * layout.pixel_scale
    return fx, fy


def _mask_file(layout: Layout, kind: str):
    """The finest packaged mask of the layout's detector set (bpm or illum), loaded whole, or None."""
    from ..calibrate import masks

    det = layout.detector
    found = instruments.static_mask_file(det.detid, kind, (1, 1))
    return None if found is None else masks.load(str(found.path), det.ccd_shape)


def _bpm(layout: Layout) -> list[np.ndarray]:
    """The detector set's real bad-pixel mask brought to the layout's binning (none packaged: no bad pixels)."""
    from ..calibrate import masks

    loaded = _mask_file(layout, "bpm")
    if loaded is None:
        return [np.zeros(layout.shape, bool) for _ in range(3)]
    binning, whole = loaded
    ny, nx = layout.detector.ccd_shape
    b = (layout.binning, layout.binning)
    return [masks.rebin_mask(whole[c], binning, Section(0, nx, 0, ny), b) for c in (1, 2, 3)]


def _illumination(layout: Layout) -> list[np.ndarray]:
    """Lit fraction of every binned pixel from the detector set's finest real illumination mask."""
    loaded = _mask_file(layout, "illum")
    if loaded is None:
        return [np.ones(layout.shape, np.float32) for _ in range(3)]
    (bx, by), whole = loaded
    lit = [(~whole[c]).astype(np.float32) for c in (1, 2, 3)]
    fx, fy = layout.binning // bx, layout.binning // by
    if fx > 1 or fy > 1:
        lit = [m.reshape(m.shape[0] // fy, fy, m.shape[1] // fx, fx).mean(axis=(1, 3)) for m in lit]
    return lit


@dataclass
class DetectorTruth:
    """Static truth of the detector at one binning, per CCD (lists index CCD1..3)."""

    bias2d: list[np.ndarray]  # ADU, static structure on top of the amplifier level
    illum: list[np.ndarray]  # lit fraction
    badpix: list[np.ndarray]  # 0 good, 1 low response, 2 hot
    hot_rate: list[np.ndarray]  # e-/s of the hot pixels
    flat: dict[str, list[np.ndarray]]  # multiplicative response per band (CCD2 centre median = 1)
    fringe: list[np.ndarray]  # fringe pattern, peak amplitude ~1


def detector_truth(layout: Layout, rng: np.random.Generator) -> DetectorTruth:
    ny, nx = layout.shape
    illum = _illumination(layout)
    bpm = _bpm(layout)
    bias2d, badpix, hot_rate, p2p, fringe = [], [], [], [], []
    yy = np.linspace(0, 1, ny)[:, None]
    cam = layout.camera
    for c in range(3):
        columns = rng.normal(0.0, 0.8, nx)[None, :]
        glow = np.zeros((1, nx))
        for amp in (a for a in cam.amps if a.ccd == c + 1):  # amplifier glow at the side each reads from
            cols = layout.amp_columns(amp)
            ramp = 3.0 * np.exp(-np.arange(cols.stop - cols.start) / (40.0 / layout.binning * 2))
            glow[0, cols] = ramp if amp.overscan_right else ramp[::-1]
        bias = columns + 1.5 * yy + glow + rng.normal(0, 0.3, (ny, nx))
        bottom = layout.detector.bottom_rows // layout.binning
        if bottom and cam.bottom_bias_adu:  # the bottom rows' excess, which their overscan does not share
            y = (np.arange(bottom) + 0.5) * layout.binning
            bias[:bottom] += cam.bottom_bias_adu * np.exp(-y / 16.0)[:, None]
        bias2d.append(bias.astype(np.float32))
        kind = np.zeros((ny, nx), np.uint8)
        # bad pixels in the real mask: column segments either dead-ish or hot, chosen per column
        cols = np.unique(np.nonzero(bpm[c])[1])
        hot_cols = cols[rng.random(cols.size) < 0.3]
        kind[bpm[c]] = 1
        kind[:, hot_cols] = np.where(bpm[c][:, hot_cols], 2, kind[:, hot_cols])
        badpix.append(kind)
        hot_rate.append(np.where(kind == 2, rng.uniform(2.0, 40.0, (ny, nx)), 0.0).astype(np.float32))
        tex = 0.008 * rng.normal(size=(ny, nx)) + 0.003 * _random_field(rng, (ny, nx), 2.0, 8.0 / layout.binning)
        tex[kind == 1] = rng.uniform(-0.7, -0.4, int((kind == 1).sum()))
        p2p.append(tex.astype(np.float32))
        fringe.append(fringe_pattern(rng, (ny, nx), layout.binning))
    flats = {}
    for band in obsplan.FILTERS:
        sens = ccd_sensitivity(band, cam)
        per_ccd = []
        for c in range(3):
            vig = vignetting(layout, c + 1)
            tex = p2p[c]
            scale = np.where(badpix[c] == 1, 1.0, P2P_SCALE[band])
            per_ccd.append((sens[c] * vig * (1.0 + tex * scale)).astype(np.float32))
        norm = np.median(per_ccd[1][norm_region(layout)][illum[1][norm_region(layout)] == 1.0])
        flats[band] = [f / np.float32(norm) for f in per_ccd]
    return DetectorTruth(bias2d, illum, badpix, hot_rate, flats, fringe)


def fringe_pattern(rng: np.random.Generator, shape: tuple[int, int], binning: int) -> np.ndarray:
    """One CCD's fringe pattern (peak ~1): the interference of the night-sky lines in a thin CCD, the cosine of its
    thickness (a smooth random field, 60 unbinned pixels at its finest) times 2.5 fringes per unit of it, so that
    the fringes are tens of unbinned pixels apart; their contrast varies over the CCD (0.2 to 1)."""
    thick = _random_field(rng, shape, 3.0, 60.0 / binning)
    fringes = np.cos(2 * np.pi * 2.5 * thick).astype(np.float32)
    return fringes * (0.6 + 0.4 * _random_field(rng, shape, 3.0, 200.0 / binning).clip(-1, 1)).astype(np.float32)


def vignetting(layout: Layout, ccd: int) -> np.ndarray:
    """Optical fall-off with distance from the axis (CCD2's centre): 1 on axis, 1 - VIGNETTING at the corner."""
    fx, fy = focal_coords(layout, ccd)
    corner = 2.75 * 60.0 * math.sqrt(2.0)
    return 1.0 - VIGNETTING * (np.hypot(fx, fy) / corner) ** 2


def norm_region(layout: Layout) -> tuple[slice, slice]:
    """CCD2's central region used to scale and normalise flats ([100:1800,100:4500] unbinned)."""
    b = layout.binning
    return slice(100 // b, 4500 // b), slice(100 // b, 1800 // b)


def row_term(rng: np.random.Generator, ny: int) -> np.ndarray:
    """Row-by-row bias wander common to a frame's data and overscan (ADU)."""
    y = np.arange(ny) / ny
    waves = sum(rng.choice([-1, 1]) * rng.uniform(1.0, 2.5) * np.sin(2 * np.pi * (k * y + rng.random())) for k in (0.7, 2.3, 5.1))
    return (waves + rng.uniform(2.0, 6.0) * np.exp(-np.arange(ny) / rng.uniform(5, 20))).astype(np.float32)
