"""Sources and reference catalogues against the simulator's truth."""
from __future__ import annotations

import numpy as np
import pytest

from gmosred.errors import GmosredError
from gmosred.measure import refcat
from gmosred.simulate import truth as truthmod


# ------------------------------------------------------------------ reference catalogues
@pytest.mark.parametrize("suffix", [".fits", ".csv", ".ecsv", ".xml"])
def test_catalogue_files_are_read_by_their_usual_column_names(small_run, tmp_path, suffix):
    out, truth = small_run
    gaia, ps1 = truth.gaia[:400], truth.ps1[:400].copy()
    ps1["iMeanPSFMag"][0] = -999.0  # PS1's missing value
    fmt = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".xml": "votable", ".fits": "fits"}[suffix]
    gaia.write(tmp_path / f"gaia{suffix}", format=fmt)
    ps1.write(tmp_path / f"ps1{suffix}", format=fmt)
    g = refcat.read(tmp_path / f"gaia{suffix}")
    assert {"ra", "dec", "ra_error", "pmra", "pmdec_error", "epoch", "G"} <= set(g.colnames)
    assert np.allclose(g["ra"], gaia["ra"]) and np.all(g["epoch"] == 2016.0)
    p = refcat.read(tmp_path / f"ps1{suffix}", epoch=2012.0)
    assert {"ra", "dec", "r", "r_err", "i", "i_err"} <= set(p.colnames)
    assert np.isnan(p["i"][0]) and np.allclose(p["r"], ps1["rMeanPSFMag"])
    with pytest.raises(GmosredError, match="no pmra"):
        refcat.require(p, ("pmra",), "astrometry", "ps1")


def test_catalogue_without_positions_or_unreadable_is_one_line(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(GmosredError, match="has no RA/Dec columns"):
        refcat.read(tmp_path / "x.csv")
    (tmp_path / "y.fits").write_bytes(b"not a fits file" * 200)
    with pytest.raises(GmosredError, match="not a readable catalogue"):
        refcat.read(tmp_path / "y.fits")
    with pytest.raises(GmosredError, match="no such catalogue"):
        refcat.read(tmp_path / "z.fits")


def test_proper_motions_move_gaia_to_the_frame_epoch(small_run):
    """Moved to a 2006 frame's epoch, Gaia's positions agree with the truth within their grown errors;
    left at 2016.0 they miss by the mean motion times ten years."""
    out, truth = small_run
    rec = next(r for r in truth.frames if r["kind"] == "science")
    epoch = truthmod.model.julian_epoch(rec["start"])
    assert 2006 < epoch < 2007
    idx = {i: n for n, i in enumerate(truth.stars["id"])}
    stars = truth.stars[[idx[s - 4000000000000000000] for s in truth.gaia["source_id"]]]
    true_ra, true_dec = truthmod.model.positions_at(stars, epoch)
    cat = refcat.standardise(truth.gaia, "gaia")
    moved = refcat.at_epoch(cat, epoch)
    ddec = (np.asarray(moved["dec"]) - true_dec) * 3.6e6
    dra = (np.asarray(moved["ra"]) - true_ra) * np.cos(np.radians(true_dec)) * 3.6e6
    assert np.std(ddec / moved["dec_error"]) == pytest.approx(1.0, rel=0.15)
    assert np.std(dra / moved["ra_error"]) == pytest.approx(1.0, rel=0.15)
    bright = (np.asarray(cat["G"]) < 19) & np.isfinite(np.asarray(cat["pmdec"]))
    assert np.sqrt(np.mean(ddec[bright] ** 2)) < 5.0  # mas
    stale = (true_dec - np.asarray(cat["dec"])) * 3.6e6  # where the stars went since 2016.0
    mean_motion = np.nanmean(np.asarray(cat["pmdec"])) * (epoch - 2016.0)
    assert np.median(stale) == pytest.approx(mean_motion, abs=3.0)
    assert abs(mean_motion) > 25.0


def test_a_damaged_cached_catalogue_is_one_line_and_not_used(tmp_path):
    from gmosred.measure import services

    ra_c, dec_c, radius = services.field_of(271.0, -24.4)
    (tmp_path / "catalogs").mkdir()
    cache = tmp_path / "catalogs" / f"gaia_{ra_c:.4f}_{dec_c:+.4f}_{radius * 60:.1f}.ecsv"
    cache.write_text("# %ECSV 1.0\n# ---\n# datatype: [garbage\n")
    with pytest.raises(services.CatalogUnavailable, match=r"not a readable cached catalogue.*remove it") as e:
        services.cached("gaia", 271.0, -24.4, tmp_path, url="http://127.0.0.1:9")  # nothing asked: it is cached
    assert "\n" not in str(e.value) and cache.name in str(e.value)


# ------------------------------------------------------------------ sources
@pytest.fixture(scope="module")
def mosaicked(small_run, tmp_path_factory):
    """Mosaics of an i frame (stars on sky) and an Ha frame (stars on the nebula) of the small run."""
    from reduced import reduce_and_mosaic

    out, truth = small_run
    recs = [[r for r in truth.frames if r["kind"] == "science" and r["band"] == band][1] for band in ("i", "Ha")]
    done = reduce_and_mosaic(out, truth, tmp_path_factory.mktemp("measure"), recs)
    return truth, {rec["band"]: (rec, mrg) for rec, rg, mrg in done}


def _truth_in_mosaic(truth, rec, plane):
    """True mosaic pixels (0-based), expected aperture S/N and isolation of every star of one frame."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    b = truth.layout.binning
    x2, y2 = truthmod.star_pixels(truth, truth.stars, rec)
    xm, ym = x2 + 2048 // b + 37 // b, y2
    flux = truthmod.star_electrons(truthmod.model.gmos_magnitudes(truth.stars, rec["band"]), rec["band"],
                                   rec["airmass"], rec["exptime"])
    ny, nx = plane.sci.shape
    fw = rec["fwhm_arcsec"] / truth.layout.pixel_scale
    ix, iy = np.clip(np.rint(xm).astype(int), 0, nx - 1), np.clip(np.rint(ym).astype(int), 0, ny - 1)
    bad = ndimage.binary_dilation((plane.dq & 0x59) != 0, iterations=3)
    inside = (xm > 5) & (xm < nx - 5) & (ym > 5) & (ym < ny - 5) & ~bad[iy, ix]
    r = max(fw, 1.5)
    alpha = truthmod.model.moffat_alpha(fw)
    frac = 1 - (1 + (r / alpha) ** 2) ** (1 - truthmod.model.MOFFAT_BETA)
    snr = flux * frac / np.sqrt(flux * frac + np.pi * r * r * np.maximum(plane.var[iy, ix], 1.0))
    iso = np.ones(len(xm), bool)
    for i, j in cKDTree(np.c_[xm, ym]).query_pairs(1.5 * max(fw, 1.5)):
        iso[i] &= not flux[j] > 0.1 * flux[i]
        iso[j] &= not flux[i] > 0.1 * flux[j]
    return xm, ym, snr, inside, iso, fw


@pytest.mark.e2e
def test_detection_finds_the_stars_with_their_seeing_and_positions(mosaicked):
    """On a star field: at least 90% of the isolated stars above 10 sigma found at 4x4, the seeing measured, centroids
    of bright stars within a few hundredths of a pixel of the truth. (At 4x4 the stars are undersampled, FWHM
    about 2.5 pixels: the pixel and the mosaic's interpolation of CCD1 and CCD3 broaden them by up to a
    fifth, and the FWHM is measured as the plane shows it. At 2x2 it is within a few percent: benchmarks.)"""
    from scipy.spatial import cKDTree

    from gmosred.frame.model import read_processed
    from gmosred.measure.sources import detect

    truth, res = mosaicked
    rec, path = res["i"]
    plane = read_processed(path).planes[0]
    cat, info = detect(plane.sci, plane.var, plane.dq, truth.layout.pixel_scale)
    xm, ym, snr, inside, iso, fw = _truth_in_mosaic(truth, rec, plane)
    assert fw < info["fwhm_px"] < 1.25 * fw
    ox, oy = np.asarray(cat["X_IMAGE"]) - 1, np.asarray(cat["Y_IMAGE"]) - 1
    d, k = cKDTree(np.c_[ox, oy]).query(np.c_[xm, ym])
    found = d < max(1.0, 0.5 * fw)
    want = inside & iso & (snr > 10)
    assert want.sum() > 100
    assert found[want].mean() >= 0.90  # 0.91 here; 0.96-0.98 on full-size 2x2 frames, where stars are sampled
    bright = want & found & (snr > 100)
    err = np.hypot(ox[k[bright]] - xm[bright], oy[k[bright]] - ym[bright])
    assert np.median(err) < 0.05
    # the quoted centroid errors are honest within a factor of two for stars of moderate S/N
    mid = want & found & (snr > 20) & (snr < 100)
    pull = (ox[k[mid]] - xm[mid]) / np.asarray(cat["X_ERR"])[k[mid]]
    robust = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    assert 0.5 < robust < 2.0


@pytest.mark.e2e
def test_detection_on_the_nebula_finds_the_stars_and_measures_their_flux(mosaicked):
    """On an Ha frame dominated by the nebula: isolated stars above 10 sigma found (0.82 at 4x4, 0.92 on a 2x2
    frame; the aim, 95%, is open: stars on bright filaments are lost to their segments), and their PSF fluxes
    against a local plane of sky within 5% of the truth (median: 1.04 at 4x4, where the nebula's structure is on
    the scale of the 2-pixel stars and the plane cannot follow it; 1.01 on a 2x2 frame) with less than half the
    scatter of aperture fluxes against an annulus median (0.09 against 0.36 at 4x4; 0.03 against 0.49 at 2x2)."""
    from scipy.spatial import cKDTree

    from gmosred.frame.model import read_processed
    from gmosred.measure.sources import detect

    truth, res = mosaicked
    rec, path = res["Ha"]
    plane = read_processed(path).planes[0]
    cat, info = detect(plane.sci, plane.var, plane.dq, truth.layout.pixel_scale)
    xm, ym, snr, inside, iso, fw = _truth_in_mosaic(truth, rec, plane)
    ox, oy = np.asarray(cat["X_IMAGE"]) - 1, np.asarray(cat["Y_IMAGE"]) - 1
    d, k = cKDTree(np.c_[ox, oy]).query(np.c_[xm, ym])
    found = d < max(1.0, 0.5 * fw)
    want = inside & iso & (snr > 10)
    assert want.sum() > 100
    assert found[want].mean() >= 0.80
    flux = truthmod.star_electrons(truthmod.model.gmos_magnitudes(truth.stars, rec["band"]), rec["band"],
                                   rec["airmass"], rec["exptime"])
    bright = want & found & (snr > 30) & ((np.asarray(cat["FLAGS"])[k] & 0x2F) == 0)
    ratio = np.asarray(cat["FLUX_PSF"])[k[bright]] / flux[bright]
    assert bright.sum() > 30
    assert abs(np.median(ratio) - 1) < 0.05
    # against the aperture's fluxes (sky from the annulus median), scaled by the true PSF's light in the aperture
    alpha = truthmod.model.moffat_alpha(fw)
    inside_aperture = 1 - (1 + (cat.meta["APERRAD"] / alpha) ** 2) ** (1 - truthmod.model.MOFFAT_BETA)
    aperture = np.asarray(cat["FLUX_APER"])[k[bright]] / (flux[bright] * inside_aperture)

    def scatter(r):
        return 1.4826 * np.median(np.abs(r - np.median(r)))

    assert scatter(ratio) < 0.5 * scatter(aperture), (scatter(ratio), scatter(aperture))
    assert scatter(ratio) < 0.12


# ------------------------------------------------------------------ the measure step in the pipeline
@pytest.fixture(scope="module")
def measured(small_run, tmp_path_factory):
    """`gmosred run` of M8-1 (r, i, Ha, HaC) against the catalogue stand-in: the products and the service's log."""
    import os

    from gmosred.cli import main
    from gmosred.simulate.catalogs import StandInCatalogs

    out, truth = small_run
    raw = tmp_path_factory.mktemp("measured") / "raw"
    raw.mkdir()
    bands = ("r", "i", "Ha", "HaC")
    for r in truth.frames:
        if r["kind"] == "bias" or (r["band"] in bands and (r["kind"] == "twilight" or r["object"] == "M8-1")):
            os.symlink(out / "raw" / f"{r['file']}.fits", raw / f"{r['file']}.fits")
    work = raw.parent / "work"
    with StandInCatalogs(truth.gaia, truth.ps1) as service:
        code = main(["run", str(raw), "--workdir", str(work), "--jobs", "2", "--set", f"measure.gaia_url={service.url}",
                     "--set", f"measure.mast_url={service.url}"])
        requests = list(service.requests)
    assert code == 0
    recs = [r for r in truth.frames if r["kind"] == "science" and r["object"] == "M8-1" and r["band"] in bands]
    return truth, work, recs, requests


def _product(work, rec):
    """A science frame's measured product: cmrg, or cmfrg where its fringe was removed."""
    found = sorted(work.glob(f"cm*rg{rec['file']}.fits"))
    assert len(found) == 1, (rec["file"], found)
    return found[0]


def _astrometry(measured, bands):
    from astropy.io import fits

    truth, work, recs, _ = measured
    out = []
    for rec in (r for r in recs if r["band"] in bands):
        product = _product(work, rec)
        with fits.open(product) as h:
            hdr = h["SCI"].header
            assert hdr["WCSCAT"] == "Gaia DR3" and hdr["WCSNMAT"] >= 20, rec["file"]
            assert abs(hdr["WCSEPOCH"] - truthmod.model.julian_epoch(rec["start"])) < 1e-3
            assert h["VAR"].header["CTYPE1"] == hdr["CTYPE1"] == h["DQ"].header["CTYPE1"]  # the WCS in VAR and DQ too
        fit, floor, n = truthmod.wcs_errors(truth, rec, product)
        assert n >= 10, rec["file"]
        out.append((rec["file"], rec["band"], hdr["WCSORDER"], fit, floor))
    return out


@pytest.mark.e2e
def test_every_frame_is_on_the_sky(measured):
    """Every science frame, nebula or not, gets a solution, and never a wrong one (a tenth of a 4x4 pixel is
    58 mas); the catalogues were asked once for the field and shared by every frame."""
    truth, work, recs, requests = measured
    for name, band, order, fit, floor in _astrometry(measured, ("r", "i", "Ha", "HaC")):
        assert fit < 58.0, (name, band, fit)
    jobs = [p for m, p in requests if m == "POST" and p.endswith("/tap/async")]
    ps1 = [p for m, p in requests if "panstarrs" in p]
    assert len(jobs) == 1 and len(ps1) == 1  # one field (M8-1), one query each, shared by every frame
    assert len(list((work / "catalogs").glob("*.ecsv"))) == 2


@pytest.mark.e2e
def test_star_fields_reach_the_centroiding_floor(measured):
    """Where the stars are many (i, HaC, r), the fitted TAN-SIP puts them within 1.2x of what the true WCS
    gives for the same centroids (the floor), with the distortion fitted (SIP order > 1)."""
    for name, band, order, fit, floor in _astrometry(measured, ("r", "i", "HaC")):
        assert order >= 2, (name, band)
        assert fit <= 1.2 * floor + 1.0, (name, band, fit, floor)


@pytest.mark.e2e
def test_nebular_frames_reach_the_centroiding_floor(measured):
    """M8-1's Ha frames, where the nebula fills the field, reach the floor too. (Over the demo's 45 frames some
    Ha, SII and r frames' few noisy stars make the cross-validation fall back to a linear WCS that misses the
    distortion: the distortion shared by the frames of a setup, fitted jointly, is still to come.)"""
    for name, band, order, fit, floor in _astrometry(measured, ("Ha",)):
        assert fit <= 1.2 * floor + 1.0, (name, band, fit, floor)


def _zero_point_errors(measured, bands):
    from astropy.io import fits

    truth, work, recs, _ = measured
    out = []
    for rec in (r for r in recs if r["band"] in bands):
        with fits.open(_product(work, rec)) as h:
            hdr = h["SCI"].header
        band = rec["band"]
        true_zp, true_ct = truthmod.zero_point(truth, rec)
        assert hdr["PHOTMETH"] == ("same band" if band in ("r", "i") else "normal-star colours")
        out.append((rec["file"], band, hdr["PHOTZP"] - true_zp, hdr["PHOTCT"] - true_ct))
    return out


@pytest.mark.e2e
def test_zero_points_and_colour_terms_on_star_fields(measured):
    """Frames whose sky is stars (HaC, i): zero points and colour terms against the truth, within the narrow-band
    aim (0.03 mag) for both at 4x4: found within 0.020 (HaC) and 0.007 (i; 0.004 on a full-size 2x2 frame), colour
    terms within 0.018."""
    for name, band, dzp, dct in _zero_point_errors(measured, ("HaC", "i")):
        assert abs(dzp) < 0.03, (name, band, dzp)
        assert abs(dct) < 0.03, (name, band, dct)


@pytest.mark.e2e
def test_zero_points_on_nebular_frames(measured):
    """On the nebula, PSF photometry against a local plane of sky holds: Ha within the narrow-band aim (0.03 mag;
    found within 0.026 at 4x4, where aperture photometry against an annulus was off by 0.4-1.4 mag), and r, which
    sees the nebula's lines, within 0.03 (found 0.014-0.022)."""
    for name, band, dzp, dct in _zero_point_errors(measured, ("r", "Ha")):
        assert abs(dzp) < 0.03, (name, band, dzp)


@pytest.mark.e2e
@pytest.mark.xfail(strict=True, reason="issue 15, open: r on the nebula reads 0.014-0.022 mag faint at 4x4 (0.011 "
                   "at 2x2): with no star on flat sky, no aperture correction is measured and the Moffat model's "
                   "total stands for the mosaic's interpolated, undersampled stars")
def test_broad_band_zero_points_on_nebular_frames_meet_the_aim(measured):
    for name, band, dzp, dct in _zero_point_errors(measured, ("r",)):
        assert abs(dzp) < 0.01, (name, band, dzp)


def _solve(truth, rec, path, catalog):
    import warnings

    from astropy.wcs import WCS

    from gmosred.frame.model import read_processed
    from gmosred.measure import astrometry
    from gmosred.measure.sources import detect

    plane = read_processed(path).planes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = WCS(plane.header)
    cat, info = detect(plane.sci, plane.var, plane.dq, truth.layout.pixel_scale)
    return cat, astrometry.solve(cat, catalog, header, plane.sci.shape, truth.layout.pixel_scale,
                                 fwhm_px=info["fwhm_px"])


@pytest.mark.e2e
def test_proper_motions_are_used_few_stars_give_a_linear_wcs_and_a_wrong_field_is_refused(mosaicked):
    from gmosred.measure import astrometry

    truth, res = mosaicked
    rec, path = res["i"]
    epoch = truthmod.model.julian_epoch(rec["start"])
    gaia = refcat.standardise(truth.gaia, "gaia")
    true_ra, true_dec = truthmod.model.positions_at(truth.stars, epoch)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.c_[true_ra * np.cos(np.radians(true_dec)), true_dec])

    def offset(cat, sol):
        """Median (fitted - true) declination of the bright matched stars, mas."""
        snr = np.asarray(cat["SNR"])[sol.src_index]
        x, y = np.asarray(cat["X_IMAGE"])[sol.src_index][snr > 50], np.asarray(cat["Y_IMAGE"])[sol.src_index][snr > 50]
        ra, dec = sol.wcs.all_pix2world(x, y, 1)
        d, k = tree.query(np.c_[ra * np.cos(np.radians(dec)), dec])
        return float(np.median((dec - true_dec[k])[d * 3.6e6 < 200]) * 3.6e6)

    cat, moved = _solve(truth, rec, path, refcat.at_epoch(gaia, epoch))
    _, stale = _solve(truth, rec, path, gaia)  # left at Gaia's 2016.0
    expected = -np.nanmedian(np.asarray(gaia["pmdec"])) * (epoch - 2016.0)  # where the catalogue puts the stars
    assert abs(offset(cat, moved)) < 5.0
    assert abs(expected) > 25.0 and offset(cat, stale) == pytest.approx(expected, abs=8.0)
    # fifteen stars: a linear WCS, not a polynomial fitted to the noise
    bright = refcat.at_epoch(gaia, epoch)
    bright = bright[np.argsort(np.asarray(bright["G"]))]
    x, y = moved.wcs.all_world2pix(np.asarray(bright["ra"]), np.asarray(bright["dec"]), 1)
    ny, nx = (1152, 1554)
    on = np.flatnonzero((x > 50) & (x < nx - 50) & (y > 50) & (y < ny - 50))
    _, few = _solve(truth, rec, path, bright[on[5:20]])
    assert few.order == 1 and few.n_used >= 8
    # a catalogue of another field: refused with the figures, never a wrong solution
    elsewhere = refcat.at_epoch(gaia, epoch)
    elsewhere["dec"] = np.asarray(elsewhere["dec"]) + 0.2
    with pytest.raises(astrometry.NoSolution, match=r"(no significant match|too few).*"):
        _solve(truth, rec, path, elsewhere)


@pytest.mark.e2e
def test_an_unreachable_catalogue_leaves_the_frame_uncalibrated_and_says_why(mosaicked, tmp_path, caplog):
    from astropy.io import fits

    from gmosred.pipeline.steps import SECTIONS, make
    from gmosred.simulate.catalogs import StandInCatalogs
    from dataclasses import replace

    truth, res = mosaicked
    rec, path = res["i"]
    with StandInCatalogs(truth.gaia, truth.ps1, refuse=True) as down:
        params = {k: SECTIONS[k] for k in ("measure", "detect", "astrometry", "photometry")}
        params["measure"] = replace(params["measure"], gaia_url=down.url, mast_url=down.url)
        out = make("measure", path, params=params, outdir=tmp_path)
        again = make("measure", path, params=params, outdir=tmp_path / "again") if (tmp_path / "again").mkdir() is None else None
        asked = [p for m, p in down.requests if m == "POST"]
    with fits.open(out) as h:
        hdr = h["SCI"].header
        assert hdr["WCSCAT"] == "NONE" and "Unavailable" in hdr["WCSFAIL"] and "PHOTZP" not in hdr
        assert len(h["OBJCAT"].data) > 100  # the sources are there all the same
    assert again is not None and len(asked) == 2  # a new folder asks again; frames in one folder do not
    warned = [r.getMessage() for r in caplog.records if "astrometry not calibrated" in r.getMessage()]
    assert warned and all("\n" not in w for w in warned)
