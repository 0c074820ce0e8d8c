"""The point-spread function of a frame and photometry by fitting it.

The PSF is an elliptical Moffat profile, I(r) proportional to (1 + q / alpha^2)^-beta with q a quadratic form
of unit determinant (so the FWHM is the geometric mean of the two axes), integrated over each pixel by 3 x 3
sub-sampling. Its FWHM, beta and ellipticity are fitted to the frame's bright isolated stars, each with its own
amplitude and local plane of background (solved linearly inside the non-linear fit).

Each source's flux is then the amplitude of that PSF fitted together with a plane of background over a disk of
``radius`` FWHM about its centroid, weighted by the VAR plane, with DQ-flagged pixels and the pixels of other
sources' segments left out. On a nebula this is what aperture photometry cannot do: the sky under a star is
the plane through its immediate surroundings, not the median of an annulus several arcseconds away that lies on
another filament. The same fit, with a second profile 1.25x broader than the PSF beside it, gives EXTENT: the share
of the flux that prefers the broader profile, its coefficient over the PSF-only fit's flux (SExtractor's SPREAD_MODEL, Desai et al. 2012, asks the same question),
with its error from that fit's covariance: zero for a point source within its error, positive for an extended one
(a nebular knot, a galaxy), negative for a cosmic ray.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Sub-sampling of each pixel when the profile is integrated over it.
SUBSAMPLE = 3
#: The broader profile of EXTENT: the PSF's FWHM times this.
EXTENT_BROADENING = 1.25


@dataclass(frozen=True)
class Moffat:
    fwhm: float  # pixels, geometric mean of the axes
    beta: float
    e1: float = 0.0  # ellipticity components: (1 - q^2) / (1 + q^2) (cos 2 theta, sin 2 theta), q = b / a
    e2: float = 0.0

    @property
    def alpha(self) -> float:
        return self.fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    @property
    def ellipticity(self) -> float:
        """1 - b/a."""
        e = min(np.hypot(self.e1, self.e2), 0.95)
        return 1.0 - np.sqrt((1.0 - e) / (1.0 + e))

    def broadened(self, factor: float) -> "Moffat":
        return Moffat(self.fwhm * factor, self.beta, self.e1, self.e2)

    def pixels(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """The profile of unit total flux integrated over the pixels at offsets (dx, dy) from its centre."""
        return self._integrate(dx, dy, gradient=False)[0]

    def pixels_and_gradient(self, dx: np.ndarray, dy: np.ndarray):
        """(profile, its derivatives with respect to the centre's x and y) over the pixels at (dx, dy)."""
        return self._integrate(dx, dy, gradient=True)

    def _integrate(self, dx, dy, gradient: bool):
        e = np.hypot(self.e1, self.e2)
        s = 1.0 / np.sqrt(max(1.0 - e * e, 1e-6))
        cxx, cyy, cxy = s * (1.0 - self.e1), s * (1.0 + self.e1), -s * self.e2  # unit determinant
        a2 = self.alpha**2
        off = (np.arange(SUBSAMPLE) + 0.5) / SUBSAMPLE - 0.5
        shape = np.broadcast(dx, dy).shape
        out, gx, gy = np.zeros(shape), (np.zeros(shape) if gradient else None), (np.zeros(shape) if gradient else None)
        for ox in off:
            u = dx + ox
            for oy in off:
                v = dy + oy
                t = 1.0 + (cxx * u * u + 2.0 * cxy * u * v + cyy * v * v) / a2
                p = t ** (-self.beta)
                out += p
                if gradient:
                    k = p * (2.0 * self.beta / a2) / t  # -d(p)/dq x 2: the centre moving by +1 lowers u by 1
                    gx += k * (cxx * u + cxy * v)
                    gy += k * (cxy * u + cyy * v)
        norm = (self.beta - 1.0) / (np.pi * a2 * SUBSAMPLE * SUBSAMPLE)
        return out * norm, (gx * norm if gradient else None), (gy * norm if gradient else None)


@dataclass
class Stamps:
    """Disks of pixels about N sources: data, weights (1/VAR, zero where unusable) and offsets from the centres."""
    data: np.ndarray  # (N, P)
    weight: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    radius: int

    @classmethod
    def cut(cls, data, var, usable, x, y, radius: float, exclude=None) -> "Stamps":
        """``usable``: pixels that may be fitted; ``exclude`` (optional, (segmentation map, ids)): a source's
        fit leaves out the pixels of every other source's segment."""
        ny, nx = data.shape
        r = max(2, int(np.ceil(radius)))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = (xx**2 + yy**2) <= radius * radius
        yy, xx = yy[disk], xx[disk]
        ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
        py, px = iy[:, None] + yy[None], ix[:, None] + xx[None]
        inside = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
        py, px = np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1)
        ok = inside & usable[py, px]
        if exclude is not None:
            seg, ids = exclude
            s = seg[py, px]
            ok &= (s == 0) | (s == np.asarray(ids)[:, None])
        v = var[py, px]
        w = np.where(ok & (v > 0), 1.0 / np.where(v > 0, v, 1.0), 0.0)
        return cls(data[py, px].astype(np.float64), w, px - np.asarray(x)[:, None], py - np.asarray(y)[:, None], r)


def _design(st: Stamps, profile: np.ndarray) -> np.ndarray:
    """Columns: the profile, a constant and a plane of background (N, P, 4)."""
    return np.stack([profile, np.ones_like(profile), st.dx / st.radius, st.dy / st.radius], axis=2)


def _solve(a: np.ndarray, w: np.ndarray, d: np.ndarray):
    """Weighted linear least squares per source: (coefficients (N, K), covariance (N, K, K), usable (N,))."""
    awt = (a * w[..., None]).transpose(0, 2, 1)
    n = awt @ a
    b = (awt @ d[..., None])[..., 0]
    k = a.shape[2]
    diag = np.maximum(np.einsum("nkk->nk", n), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        det = np.linalg.det(n / np.sqrt(diag[:, :, None] * diag[:, None, :]))  # of the correlation matrix
    ok = np.isfinite(det) & (det > 1e-10) & ((w > 0).sum(axis=1) > 2 * k)
    n[~ok] = np.eye(k)
    b[~ok] = 0.0
    cov = np.linalg.inv(n)
    return (cov @ b[..., None])[..., 0], cov, ok


def fit_psf(data, var, usable, x, y, fwhm: float, start: Moffat | None = None) -> Moffat:
    """The Moffat PSF (FWHM, beta, ellipticity) of the stars near (x, y) (0-based; bright, isolated, unsaturated),
    from ``start`` or a FWHM of ``fwhm``: the stars' positions refined by a fit of that first PSF, then the shape by
    non-linear least squares with each star's amplitude and plane solved linearly inside."""
    from scipy.optimize import least_squares

    first = start or Moffat(fwhm, 3.5)
    pos = photometry(data, var, usable, x, y, first, 1.5 * first.fwhm)
    x = np.where(np.isfinite(pos["X_PSF"]), pos["X_PSF"], x)
    y = np.where(np.isfinite(pos["Y_PSF"]), pos["Y_PSF"], y)
    st = Stamps.cut(data, var, usable, x, y, 2.5 * first.fwhm)
    sw = np.sqrt(st.weight)

    def residuals(p):
        a = _design(st, Moffat(*p).pixels(st.dx, st.dy))
        coef, _, ok = _solve(a, st.weight, st.data)
        r = (st.data - (a @ coef[..., None])[..., 0]) * sw
        return np.where(ok[:, None], r, 0.0).ravel()

    if start is None:
        x0 = min(([fwhm, b, 0.0, 0.0] for b in (2.5, 3.5, 5.0)), key=lambda p: float((residuals(p) ** 2).sum()))
    else:
        x0 = [start.fwhm, start.beta, start.e1, start.e2]
    res = least_squares(residuals, x0, bounds=([0.5, 1.2, -0.6, -0.6], [50.0, 20.0, 0.6, 0.6]),
                        x_scale=[0.1 * x0[0], 0.3, 0.02, 0.02], diff_step=1e-4, xtol=1e-5, ftol=1e-6)
    return Moffat(*map(float, res.x))


def photometry(data, var, usable, x, y, psf: Moffat, radius: float, exclude=None,
               iterations: int = 4) -> dict[str, np.ndarray]:
    """PSF fits of the sources at (x, y) (0-based) with a plane of local background over a disk of ``radius``
    pixels: flux and, by ``iterations`` Gauss-Newton steps from (x, y), position. Returns X_PSF, Y_PSF and their
    errors (NaN where the position did not converge, or moved more than half a FWHM), FLUX_PSF, FLUXERR_PSF,
    BACKGROUND_PSF (the plane at the centre), CHI2_PSF (reduced), EXTENT and EXTENT_ERR."""
    x0, y0 = np.asarray(x, float), np.asarray(y, float)
    st = Stamps.cut(data, var, usable, x0, y0, radius, exclude)
    ddx, ddy = st.dx.copy(), st.dy.copy()  # offsets from the first position
    sx, sy = np.zeros(len(x0)), np.zeros(len(x0))  # the shifts found
    pos_cov = np.full((len(x0), 2, 2), np.nan)
    moving = np.ones(len(x0), bool)
    for _ in range(iterations):
        u, v = ddx - sx[:, None], ddy - sy[:, None]
        phi, gx, gy = psf.pixels_and_gradient(u, v)
        a = np.concatenate([_design(st, phi), gx[..., None], gy[..., None]], axis=2)
        coef, cov, ok = _solve(a, st.weight, st.data)
        amp = np.where(ok & (coef[:, 0] > 0), coef[:, 0], np.nan)
        dx, dy = np.clip(coef[:, 4] / amp, -0.5, 0.5), np.clip(coef[:, 5] / amp, -0.5, 0.5)
        good = np.isfinite(dx) & np.isfinite(dy) & moving
        sx, sy = np.where(good, sx + dx, sx), np.where(good, sy + dy, sy)
        pos_cov[good] = cov[good][:, 4:, 4:] / (amp[good, None, None] ** 2)
        moving &= good
    converged = moving & (np.hypot(sx, sy) <= 0.5 * psf.fwhm)
    sx, sy = np.where(converged, sx, 0.0), np.where(converged, sy, 0.0)
    st.dx, st.dy = ddx - sx[:, None], ddy - sy[:, None]
    out = _amplitude(st, psf)
    out["X_PSF"] = np.where(converged, x0 + sx, np.nan)
    out["Y_PSF"] = np.where(converged, y0 + sy, np.nan)
    out["XERR_PSF"] = np.where(converged, np.sqrt(np.abs(pos_cov[:, 0, 0])), np.nan)
    out["YERR_PSF"] = np.where(converged, np.sqrt(np.abs(pos_cov[:, 1, 1])), np.nan)
    return out


def _amplitude(st: Stamps, psf: Moffat) -> dict[str, np.ndarray]:
    """The PSF's amplitude and plane at fixed positions, and EXTENT."""
    phi = psf.pixels(st.dx, st.dy)
    a = _design(st, phi)
    coef, cov, ok = _solve(a, st.weight, st.data)
    resid = st.data - (a @ coef[..., None])[..., 0]
    dof = np.maximum((st.weight > 0).sum(axis=1) - a.shape[2], 1)
    # EXTENT: the broader profile's coefficient in a fit of both with the plane, over the PSF flux (its error from
    # that fit's covariance, so that what the plane absorbs is not counted as signal)
    g = psf.broadened(EXTENT_BROADENING).pixels(st.dx, st.dy)
    c2, cov2, ok2 = _solve(np.concatenate([a, g[..., None]], axis=2), st.weight, st.data)
    flux = coef[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        extent = c2[:, 4] / flux  # linear in the broad profile's coefficient: its error is Gaussian
        extent_err = np.sqrt(np.maximum(cov2[:, 4, 4], 0.0)) / flux
    bad_extent = ~ok2 | ~(flux > 0) | ~np.isfinite(extent)
    out = {"FLUX_PSF": coef[:, 0], "FLUXERR_PSF": np.sqrt(np.maximum(cov[:, 0, 0], 0.0)),
           "BACKGROUND_PSF": coef[:, 1], "CHI2_PSF": (resid * resid * st.weight).sum(1) / dof}
    out = {key: np.where(ok, val, np.nan) for key, val in out.items()}
    out["EXTENT"] = np.where(bad_extent, np.nan, extent)
    out["EXTENT_ERR"] = np.where(bad_extent, np.nan, extent_err)
    return out
