"""The truth of a simulated run: what was made, saved beside the raw files, and the noiseless
model of any frame recomputed from it (so tests can compare recovered values with the truth).

Layout of ``OUTDIR/truth/``:

* ``run.json``: settings, photometric constants, and one record per raw frame (pointing, true and
  header WCS, seeing, sky, fringe amplitude, bias offsets, gains...).
* ``stars.ecsv``: every star (RA, Dec at 2016.0, proper motion, AB magnitude per band); ``gaia.ecsv`` and
  ``ps1.ecsv``: what a catalogue server would give (Gaia DR3-like astrometry, Pan-STARRS1-like photometry,
  with their column names and realistic errors).
* ``nebula.fits``: Ha, SII and continuum surface-brightness maps (e-/s/arcsec^2) with their WCS.
* ``detector.fits``: per CCD, the static bias structure (ADU), lit fraction, bad-pixel kind,
  hot-pixel rate, fringe pattern and the flat-field response per band.
* ``frames/<file>.npz``: per frame, the row-by-row bias wander per amplifier, cosmic-ray hits,
  the saturated pixels, and the random stars of twilight flats.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import model
from . import plan as obsplan


@dataclass
class Truth:
    root: Path
    run: dict
    stars: object  # astropy Table
    gaia: object
    ps1: object
    nebula: dict[str, np.ndarray]
    nebula_wcs: object
    detector: model.DetectorTruth

    @property
    def layout(self) -> model.Layout:
        return model.Layout(self.run["binning"], self.run.get("camera", model.DEFAULT_CAMERA))

    @property
    def frames(self) -> list[dict]:
        return self.run["frames"]

    def frame(self, name: str) -> dict:
        for rec in self.run["frames"]:
            if rec["file"] == name:
                return rec
        raise KeyError(name)

    def extras(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.root / "frames" / f"{name}.npz") as z:
            return dict(z)

    def electrons(self, rec: dict, ccd: int) -> np.ndarray:
        """Noiseless expected electrons per data pixel of one CCD (before photon noise and cosmics)."""
        return frame_electrons(self, rec, ccd, self.extras(rec["file"]) if rec["kind"] == "twilight" else None)


def sky_electrons(band: str, airmass: float, exptime: float, pixel_scale: float, factor: float,
                  cam: model.Camera | None = None) -> float:
    """Sky per pixel (e-) at unit flat response."""
    zp = model.zero_points(cam)[band]["2"]
    rate = 10 ** (-0.4 * (model.SKY_MAG[band] - zp)) * (1.0 + 0.35 * (airmass - 1.0)) * factor
    return float(rate * pixel_scale**2 * exptime)


def star_electrons(mag, band: str, airmass: float, exptime: float, cam: model.Camera | None = None):
    """Total electrons of stars of AB magnitude ``mag`` (CCD2 response, above the atmosphere)."""
    zp = model.zero_points(cam)[band]["2"]
    return 10 ** (-0.4 * (np.asarray(mag) - zp + model.EXTINCTION[band] * (airmass - 1.0))) * exptime


def true_wcs(truth_or_layout, rec: dict, offset: tuple[float, float] = (0.0, 0.0)):
    """The frame's true WCS of CCD2 with the optics' distortion (SIP): use ``all_world2pix``/``all_pix2world``.
    ``offset``: of CCD2's pixels in another frame (a mosaic's: its CRPIX less CCD2's)."""
    layout = truth_or_layout.layout if isinstance(truth_or_layout, Truth) else truth_or_layout
    return model.true_wcs(layout, (rec["true_crval"][0], rec["true_crval"][1]), rec["true_pa"],
                          model.DISTORTION_ARCSEC_AT_200, offset)


def star_pixels(truth_or_layout, stars, rec: dict) -> tuple[np.ndarray, np.ndarray]:
    """True CCD2 pixel (0-based x, y) of every star in one frame: moved to the frame's epoch, through the
    true WCS with its distortion."""
    ra, dec = model.positions_at(stars, model.julian_epoch(rec["start"]))
    x, y = true_wcs(truth_or_layout, rec).all_world2pix(ra, dec, 0, tolerance=1e-6)
    return x, y


def frame_electrons(truth: Truth, rec: dict, ccd: int, extras: dict | None = None) -> np.ndarray:
    layout = truth.layout
    det = truth.detector
    c = ccd - 1
    ny, nx = layout.shape
    if rec["kind"] == "bias":
        return np.zeros((ny, nx), np.float32)
    band = rec["band"]
    light = np.zeros((ny, nx), np.float64)
    if rec["kind"] == "science":
        wcs2 = true_wcs(layout, rec)
        light += rec["sky_e"]
        ext = 10 ** (-0.4 * model.EXTINCTION[band] * (rec["airmass"] - 1.0))
        neb = model.sample_map(model.nebula_rate(truth.nebula, band), truth.nebula_wcs, layout, ccd, wcs2)
        neb = model.seeing_blur(neb, rec["fwhm_arcsec"] / layout.pixel_scale)
        light += neb * (layout.pixel_scale**2 * rec["exptime"] * ext)
        if rec["fringe_e"]:
            light += rec["fringe_e"] * det.fringe[c]
        x2, y2 = star_pixels(layout, truth.stars, rec)
        x, y = _ccd2_to_ccd(layout, ccd, x2, y2)
        inside = (x > -100) & (x < nx + 100) & (y > -100) & (y < ny + 100)
        flux = star_electrons(model.gmos_magnitudes(truth.stars, band)[inside], band, rec["airmass"], rec["exptime"],
                              layout.camera)
        model.add_stars(light, x[inside], y[inside], flux, rec["fwhm_arcsec"] / layout.pixel_scale)
    else:  # twilight
        fx, fy = model.focal_coords(layout, ccd)
        gx, gy = rec["gradient"]
        light += rec["twilight_level_e"] * (1.0 + gx * fx / 165.0 + gy * fy / 165.0)
        if extras is not None:
            sel = extras["tw_ccd"] == ccd
            model.add_stars(light, extras["tw_x"][sel], extras["tw_y"][sel], extras["tw_flux"][sel],
                            rec["fwhm_arcsec"] / layout.pixel_scale)
    out = light * det.illum[c] * det.flat[band][c]
    out += det.hot_rate[c] * rec["darktime"]
    return out.astype(np.float32)


def _ccd2_to_ccd(layout: model.Layout, ccd: int, x2, y2):
    a = layout.to_ccd2(ccd)
    inv = np.linalg.inv(a[:, :2])
    d = np.vstack([np.asarray(x2) - a[0, 2], np.asarray(y2) - a[1, 2]])
    x, y = inv @ d
    return x, y


# ------------------------------------------------------------------ saving and loading
def save_static(root: Path, run: dict, stars, gaia, ps1, nebula, nebula_wcs, det: model.DetectorTruth) -> None:
    from astropy.io import fits

    root.mkdir(parents=True, exist_ok=True)
    (root / "frames").mkdir(exist_ok=True)
    stars.write(root / "stars.ecsv", overwrite=True)
    gaia.write(root / "gaia.ecsv", overwrite=True)
    ps1.write(root / "ps1.ecsv", overwrite=True)
    hdr = nebula_wcs.to_header()
    hdr["BUNIT"] = "electron / (s arcsec2)"
    maps = []
    for key, arr in nebula.items():
        h = hdr.copy()
        h["MAPNAME"] = (key, "line, or continuum per NB width")
        maps.append(fits.ImageHDU(arr, h, name=key.upper()))
    fits.HDUList([fits.PrimaryHDU()] + maps).writeto(root / "nebula.fits", overwrite=True)
    hdus = [fits.PrimaryHDU()]
    for c in range(3):
        v = c + 1
        hdus += [fits.ImageHDU(det.bias2d[c], name="BIAS2D", ver=v), fits.ImageHDU(det.illum[c], name="ILLUM", ver=v),
                 fits.ImageHDU(det.badpix[c], name="BADPIX", ver=v), fits.ImageHDU(det.hot_rate[c], name="HOTRATE", ver=v),
                 fits.ImageHDU(det.fringe[c], name="FRINGE", ver=v)]
        hdus += [fits.ImageHDU(det.flat[b][c], name=f"FLAT_{b.upper()}", ver=v) for b in obsplan.FILTERS]
    fits.HDUList(hdus).writeto(root / "detector.fits", overwrite=True)
    save_run(root, run)


def save_run(root: Path, run: dict) -> None:
    tmp = root / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=1))
    tmp.replace(root / "run.json")


def load_truth(outdir) -> Truth:
    """Load the truth written by :func:`gmosred.simulate.simulate_run` (``OUTDIR`` or ``OUTDIR/truth``)."""
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    root = Path(outdir)
    if (root / "truth").is_dir():
        root = root / "truth"
    run = json.loads((root / "run.json").read_text())
    with fits.open(root / "nebula.fits") as h:
        nebula = {hdu.header["MAPNAME"]: hdu.data.astype(np.float32) for hdu in h[1:]}
        nebula_wcs = WCS(h[1].header)
    with fits.open(root / "detector.fits") as h:
        get = lambda name: [h[name, v].data for v in (1, 2, 3)]  # noqa: E731
        det = model.DetectorTruth(
            bias2d=get("BIAS2D"), illum=get("ILLUM"), badpix=get("BADPIX"), hot_rate=get("HOTRATE"),
            flat={b: get(f"FLAT_{b.upper()}") for b in obsplan.FILTERS}, fringe=get("FRINGE"))
    return Truth(root, run, Table.read(root / "stars.ecsv"), Table.read(root / "gaia.ecsv"),
                 Table.read(root / "ps1.ecsv"), nebula, nebula_wcs, det)


def mosaic_true_wcs(truth: Truth, rec: dict, header):
    """The true WCS of a frame's mosaic, whose SCI ``header`` has the mosaic's CRPIX (kept by any fit): CCD2's
    true WCS moved to CCD2's place in the mosaic, the mosaic's CRPIX less CCD2's own (its centre)."""
    cx, cy = truth.layout.ccd2_center()
    return true_wcs(truth, rec, (header["CRPIX1"] - cx - 1.0, header["CRPIX2"] - cy - 1.0))


def wcs_errors(truth: Truth, rec: dict, product) -> tuple[float, float, int]:
    """A measured frame's astrometry against the truth: rms (mas) of its bright clean stars' positions through the
    product's fitted WCS and through the true WCS (the centroiding floor), both at the same measured centroids
    against the stars' true positions at the frame's epoch, and how many stars."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS
    from scipy.spatial import cKDTree

    from ..measure.sources import FLAGS

    with fits.open(product) as h, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = WCS(h["SCI"].header)
        obj, ref = h["OBJCAT"].data, h["REFCAT"].data
        true = mosaic_true_wcs(truth, rec, h["SCI"].header)
    by_number = {int(n): k for k, n in enumerate(obj["NUMBER"])}
    rows = np.array([by_number[int(n)] for n in ref["OBJCAT_NUMBER"]], int)
    tra, tdec = model.positions_at(truth.stars, model.julian_epoch(rec["start"]))
    cosd = np.cos(np.radians(np.median(tdec)))
    d, k = cKDTree(np.c_[tra * cosd, tdec]).query(np.c_[np.asarray(ref["RA"]) * cosd, ref["DEC"]])
    clean = (np.asarray(obj["FLAGS"])[rows] & sum(FLAGS)) == 0
    bright = clean & (np.asarray(obj["SNR"])[rows] > 100) & (d * 3.6e6 < 100)
    x, y = np.asarray(obj["X_IMAGE"])[rows][bright], np.asarray(obj["Y_IMAGE"])[rows][bright]
    tr_ra, tr_dec = tra[k[bright]], tdec[k[bright]]

    def rms(w):
        r, dd = w.all_pix2world(x, y, 1)
        return float(np.sqrt(np.mean(((r - tr_ra) * np.cos(np.radians(tr_dec))) ** 2 + (dd - tr_dec) ** 2)) * 3.6e6)

    return rms(fitted), rms(true), int(bright.sum())


def zero_point(truth: Truth, rec: dict) -> tuple[float, float]:
    """The frame's true PHOTZP and PHOTCT (catalogue magnitude = PHOTZP - 2.5 log10(e-/s) + PHOTCT (r - i))."""
    band = rec["band"]
    zp = truth.run["zero_points"][band]["2"] - truth.run["extinction"][band] * (rec["airmass"] - 1.0)
    ct = -(truth.run["colour_term"].get(band, 0.0) if band in ("r", "i") else truth.run["narrowband_slope"][band])
    return zp, ct
