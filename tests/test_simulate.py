"""The simulated M8 run: content, headers like the real ones, pixels that follow the truth model."""
import re
from collections import Counter

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from gmosred.frame import model as frame
from gmosred.simulate import plan, truth as truthmod
from gmosred.simulate.run import _STATE, _make_frame


def _raw(run, rec):
    return frame.read_raw(run[0] / "raw" / f"{rec['file']}.fits")


def test_run_content(small_run):
    out, truth = small_run
    names = sorted(p.name for p in (out / "raw").glob("*.fits"))
    assert len(names) == len(truth.frames) == 65
    assert all(re.fullmatch(r"S2006(09|10)\d\dS\d{4}\.fits", n) for n in names)
    kinds = Counter((r["kind"], r["object"], r["band"]) for r in truth.frames)
    for name in ("M8-1", "M8-2", "M8-3"):
        for band in plan.FILTERS:
            assert kinds[("science", name, band)] >= 3
    for band in plan.FILTERS:
        flats = [r for r in truth.frames if r["kind"] == "twilight" and r["band"] == band]
        levels = sorted(r["twilight_level_e"] for r in flats)
        assert len(flats) >= 3 and levels[-1] > 1.5 * levels[0]
    biases = [r for r in truth.frames if r["kind"] == "bias"]
    assert len(biases) >= 5 and len({r["start"][:10] for r in biases}) >= 3
    for r in truth.frames:
        assert "2006-09-01" <= r["start"][:10] <= "2006-10-30"
        if r["kind"] != "bias":
            assert "2006-09-10" <= r["start"][:10] <= "2006-10-10"


def test_headers_have_every_real_keyword(small_run):
    """Every keyword of the real raw header is present, values consistent, raw conventions kept."""
    from conftest import real_headers

    out, truth = small_run
    real = real_headers()
    for rec in (truth.frames[0], truth.frames[20], truth.frames[-1]):
        with fits.open(out / "raw" / f"{rec['file']}.fits", do_not_scale_image_data=True) as hdul:
            assert len(hdul) == 4
            missing = set(real[0]) - set(hdul[0].header)
            assert not missing, missing
            phu = hdul[0].header
            assert phu["INSTRUME"] == "GMOS-S" and phu["DETID"] == "EEV2037-06-03EEV8194-19-04EEV8261-07-04"
            assert phu["OBSTYPE"] == rec["obstype"] and phu["OBSCLASS"] == rec["obsclass"]
            assert phu["OBJECT"] == rec["object"] and phu["EXPTIME"] == rec["exptime"]
            assert phu["DATE-OBS"] == rec["start"][:10] and phu["DATALAB"].startswith(phu["OBSID"])
            assert phu["AMPINTEG"] == 5000 and (phu["DETRO1XS"], phu["DETRO1YS"]) == (1536, 1152)
            if rec["kind"] == "science":
                assert phu["FILTER2"] == plan.FILTER2[rec["band"]] and phu["GEMPRGID"] == "GS-2006B-Q-18"
            for k, hdu in enumerate(hdul[1:], start=1):
                h = hdu.header
                assert not set(real[k]) - set(h), set(real[k]) - set(h)
                assert "EXTNAME" not in h and h["BITPIX"] == 16 and h["BZERO"] == 32768
                assert (h["NAXIS1"], h["NAXIS2"]) == (544, 1152) and h["CCDSUM"] == "4 4"
                assert h["DETSEC"] == real[k]["DETSEC"] and h["AMPNAME"] == real[k]["AMPNAME"]
            assert hdul[3].header["DATASEC"] == "[33:544,1:1152]" and hdul[3].header["BIASSEC"] == "[1:32,1:1152]"
            assert hdul[1].header["BIASSEC"] == "[513:544,1:1152]"


def test_overscan_level_is_true_bias_level(small_run):
    """Overscan (contaminated columns skipped, row wander removed) = true level within read noise."""
    out, truth = small_run
    for rec in truth.frames[::7]:
        raw = _raw(small_run, rec)
        rows = truth.extras(rec["file"])
        for amp in raw.amps:
            over = amp.data[amp.biassec.slices][:, 4:-4].astype(float) - rows[f"row{amp.ccd}"][:, None]
            rn_adu = amp.read_noise / amp.gain
            assert np.std(over) == pytest.approx(rn_adu, rel=0.05)
            assert over.mean() == pytest.approx(rec["bias_level_adu"][amp.ccd - 1], abs=5 * rn_adu / np.sqrt(over.size))
            # the row wander is common to overscan and data: it follows row by row
            prof = np.mean(amp.data[amp.biassec.slices][:, 4:-4], axis=1) - rec["bias_level_adu"][amp.ccd - 1]
            resid = prof - rows[f"row{amp.ccd}"]
            assert np.std(resid) == pytest.approx(rn_adu / np.sqrt(24), rel=0.1)
            assert np.std(rows[f"row{amp.ccd}"]) > 2 * np.std(resid)


@pytest.mark.parametrize("kind", ["bias", "twilight", "science"])
def test_pixels_follow_truth_model(small_run, kind):
    """(raw - bias) * gain = model electrons + Poisson + read noise: unit normalised residuals."""
    out, truth = small_run
    rec = [r for r in truth.frames if r["kind"] == kind][1]
    raw = _raw(small_run, rec)
    extras = truth.extras(rec["file"])
    for amp in raw.amps:
        c = amp.ccd
        adu = amp.data[amp.datasec.slices].astype(float)
        bias = rec["bias_level_adu"][c - 1] + extras[f"row{c}"][:, None] + truth.detector.bias2d[c - 1]
        model = truth.electrons(rec, c)
        resid = ((adu - bias) * amp.gain - model) / np.sqrt(np.clip(model, 0, None) + amp.read_noise**2 + amp.gain**2 / 12)
        good = np.ones(model.shape, bool)
        if kind != "bias":
            good[extras[f"cr{c}_y"], extras[f"cr{c}_x"]] = False
        good[extras[f"sat{c}_y"], extras[f"sat{c}_x"]] = False
        assert np.mean(resid[good]) == pytest.approx(0.0, abs=0.01)
        assert np.std(resid[good]) == pytest.approx(1.0, abs=0.02)
        assert (amp.data[amp.datasec.slices][extras[f"sat{c}_y"], extras[f"sat{c}_x"]] == 65535).all()


def test_illumination_and_bad_pixels(small_run):
    out, truth = small_run
    rec = [r for r in truth.frames if r["kind"] == "science" and r["band"] == "r"][0]
    for c in (1, 2, 3):
        unlit = truth.detector.illum[c - 1] == 0
        model = truth.electrons(rec, c)
        assert (model[unlit] == truth.detector.hot_rate[c - 1][unlit] * rec["darktime"]).all()
    # CCD1 and CCD3 lose roughly half their area, CCD2 its bottom rows (the real mask)
    lit = [float((truth.detector.illum[c] > 0).mean()) for c in range(3)]
    assert 0.45 < lit[0] < 0.6 and 0.45 < lit[2] < 0.6 and 0.95 < lit[1] < 0.99
    assert (truth.detector.illum[1][:10] == 0).all()
    # bad pixels are those of the real GMOS-S EEV BPM: none on CCD1, many on CCD2
    counts = [int((b > 0).sum()) for b in truth.detector.badpix]
    assert counts[0] == 0 and counts[1] == 10942 and counts[2] == 164


def test_flat_field_truth(small_run):
    out, truth = small_run
    layout = truth.layout
    for band in plan.FILTERS:
        flats = truth.detector.flat[band]
        region = truthmod.model.norm_region(layout)
        lit = truth.detector.illum[1][region] == 1
        assert np.median(flats[1][region][lit]) == pytest.approx(1.0, abs=1e-6)
        sens = truthmod.model.ccd_sensitivity(band)
        level = [np.median(flats[c] / truthmod.model.vignetting(layout, c + 1)) for c in range(3)]
        assert level[0] / level[1] == pytest.approx(sens[0], rel=0.002)
        assert level[2] / level[1] == pytest.approx(sens[2], rel=0.002)
    assert not np.allclose(truth.detector.flat["Ha"][1], truth.detector.flat["i"][1])


def test_wcs_truth(small_run):
    """Header WCS: pointing off by a few arcsec, rotated by ~0.1 deg; per-CCD WCS consistent with the geometry."""
    out, truth = small_run
    rec = [r for r in truth.frames if r["kind"] == "science"][4]
    raw = _raw(small_run, rec)
    true2 = truthmod.true_wcs(truth, rec)
    err = np.hypot(*rec["pointing_error_arcsec"])
    assert 0.1 < err < 15
    assert 0.05 < abs(truth.run["pa_error_deg"]) < 0.15
    stars = truth.stars
    ra_now, dec_now = truthmod.model.positions_at(stars, truthmod.model.julian_epoch(rec["start"]))
    for amp in raw.amps:
        hdr_wcs = WCS(amp.header)
        # a star's true pixel on this CCD, from the true CCD2 WCS and the placement
        x2, y2 = truthmod.star_pixels(truth, stars, rec)
        x, y = truthmod._ccd2_to_ccd(truth.layout, amp.ccd, x2, y2)
        ny, nx = truth.layout.shape
        on = (x > 0) & (x < nx) & (y > 0) & (y < ny)
        assert on.sum() > 50
        ext_x = x[on] + amp.datasec.x1
        ra, dec = hdr_wcs.wcs_pix2world(ext_x, y[on], 0)
        dra = (ra - ra_now[on]) * np.cos(np.radians(dec)) * 3600
        ddec = (dec - dec_now[on]) * 3600
        offset = np.hypot(np.median(dra), np.median(ddec))
        assert offset == pytest.approx(err, abs=0.5)
        assert np.std(dra) > 0.01  # the rotation error spreads the offsets over the field


def test_star_fluxes_in_raw_frame(small_run):
    """Aperture sums of isolated, unsaturated stars on CCD2 of the raw frames match the truth fluxes."""
    out, truth = small_run
    checked = 0
    for rec in [r for r in truth.frames if r["kind"] == "science" and r["band"] == "HaC"]:
        amp = _raw(small_run, rec).amps[1]
        extras = truth.extras(rec["file"])
        adu = amp.data[amp.datasec.slices].astype(float)
        bias = rec["bias_level_adu"][1] + extras["row2"][:, None] + truth.detector.bias2d[1]
        image = (adu - bias) * amp.gain / truth.detector.flat["HaC"][1]
        x, y = truthmod.star_pixels(truth, truth.stars, rec)
        flux = truthmod.star_electrons(truthmod.model.gmos_magnitudes(truth.stars, "HaC"), "HaC", rec["airmass"], rec["exptime"])
        ny, nx = image.shape
        cosmic = np.zeros(image.shape, bool)
        cosmic[extras["cr2_y"], extras["cr2_x"]] = True
        r = 12
        for k in np.argsort(-flux):
            xi, yi = int(round(x[k])), int(round(y[k]))
            if not (2 * r < xi < nx - 2 * r and 2 * r < yi < ny - 2 * r) or flux[k] > 6e5 or flux[k] < 5e3:
                continue
            near = (np.hypot(x - x[k], y - y[k]) < 3 * r) & (flux > 0.01 * flux[k])
            box = (slice(yi - r, yi + r + 1), slice(xi - r, xi + r + 1))
            if near.sum() > 1 or (truth.detector.illum[1][box] < 1).any() or truth.detector.badpix[1][box].any() \
                    or cosmic[box].any():
                continue
            ring = np.concatenate([image[yi - 2 * r:yi - r, xi - r:xi + r].ravel(),
                                   image[yi + r:yi + 2 * r, xi - r:xi + r].ravel()])
            measured = image[box].sum() - np.median(ring) * image[box].size
            noise = np.sqrt(flux[k] + image[box].size * max(np.median(ring), 1.0) * 1.5)
            assert measured == pytest.approx(flux[k], abs=5 * noise + 0.01 * flux[k])
            checked += 1
    assert checked >= 5


def test_reference_catalogues(small_run):
    """Gaia-like astrometry (errors growing with G, proper motions, a few two-parameter sources) and PS1-like
    photometry (catalogue-system r and i) as the servers give them; the stars move by their proper motions."""
    out, truth = small_run
    gaia, ps1, stars = truth.gaia, truth.ps1, truth.stars
    idx = {i: n for n, i in enumerate(stars["id"])}
    s = stars[[idx[i - 4000000000000000000] for i in gaia["source_id"]]]
    pull = (gaia["ra"] - s["ra"]) * np.cos(np.radians(s["dec"])) * 3.6e6 / gaia["ra_error"]
    assert np.std(pull) == pytest.approx(1.0, rel=0.1)
    good = np.isfinite(gaia["pmra"])
    assert 0.01 < 1 - good.mean() < 0.06
    assert np.std((gaia["pmdec"] - s["pmdec"])[good] / gaia["pmdec_error"][good]) == pytest.approx(1.0, rel=0.1)
    assert np.median(s["pmdec"]) < -1.0  # a mean motion: ignoring it misses by tens of mas over a decade
    s = stars[[idx[i - 100000000000] for i in ps1["objID"]]]
    assert ps1["rMeanPSFMag"].min() > 13.5 and len(ps1) > 1000
    assert np.std((ps1["rMeanPSFMag"] - s["r"]) / ps1["rMeanPSFMagErr"]) == pytest.approx(1.0, rel=0.1)
    # GMOS magnitudes carry the colour term in r - i
    gm = truthmod.model.gmos_magnitudes(stars, "i") - stars["i"]
    assert np.allclose(gm, truthmod.model.COLOUR_TERM["i"] * (stars["r"] - stars["i"]))


def test_fringe_only_in_i(small_run):
    out, truth = small_run
    for r in truth.frames:
        if r["kind"] == "science":
            assert (r["fringe_e"] > 0) == (r["band"] == "i")
            if r["band"] == "i":
                assert 0.01 < r["fringe_e"] / r["sky_e"] < 0.025


def test_deterministic(small_run, tmp_path):
    """Remaking a frame from the same seed gives the same bytes (pixels and headers)."""
    out, truth = small_run
    _STATE["truth"], _STATE["rawdir"] = truth, tmp_path
    (tmp_path / "frames").mkdir()
    saved_root = truth.root
    try:
        truth.root = tmp_path
        for k in (0, 30):
            _make_frame(k)
            name = truth.frames[k]["file"]
            with fits.open(tmp_path / f"{name}.fits") as a, fits.open(out / "raw" / f"{name}.fits") as b:
                for ha, hb in zip(a, b):
                    assert ha.header == hb.header
                    if ha.data is not None:
                        np.testing.assert_array_equal(ha.data, hb.data)
    finally:
        truth.root = saved_root
        _STATE.clear()


def test_program_size_plan():
    """--size program matches the real program: 90 science frames, about 300 calibrations."""
    exposures = plan.observing_plan("program", np.random.default_rng(0))
    science = [e for e in exposures if e.obsclass == "science"]
    calibrations = [e for e in exposures if e.obsclass == "dayCal"]
    assert len(science) == 90 and 280 <= len(calibrations) <= 320
    assert len({e.file for e in exposures}) == len(exposures)
    assert all(1.0 <= e.airmass < 2.0 for e in science)
