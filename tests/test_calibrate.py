"""Master bias, master flats and science reduction checked against the simulator's truth."""
import logging
import shutil

import numpy as np
import pytest
from astropy.io import fits

from gmosred.params import ParameterError
from gmosred.frame import dq as dqbits
from gmosred.frame import model as frame
from gmosred.calibrate import overscan as ovs
from gmosred.calibrate.bias import make_master_bias
from gmosred.calibrate.flat import FlatParams, make_master_flat
from gmosred.calibrate.masks import rebin_mask, static_mask
from gmosred.calibrate.reduce import reduce_frame
from gmosred.pipeline.runners import run_each
from gmosred.cli import main
from gmosred.errors import GmosredError
from gmosred.frame.sections import Section

DETID = "EEV2037-06-03EEV8194-19-04EEV8261-07-04"


def _raw(out, rec):
    return str(out / "raw" / f"{rec['file']}.fits")


@pytest.fixture(scope="module")
def cals(small_run, tmp_path_factory):
    out, truth = small_run
    work = tmp_path_factory.mktemp("cals")
    bias = make_master_bias([_raw(out, r) for r in truth.frames if r["kind"] == "bias"], work / "MCbias.fits")
    flats = {}
    for band in ("r", "i", "Ha"):
        flats[band] = make_master_flat([_raw(out, r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == band],
                                       work / f"MCflat_{band}.fits", bias=bias)
    return work, bias, flats


# ---------------------------------------------------------------- overscan
def _amp(levels, ny=200, rn=2.0, right=False, seed=0):
    rng = np.random.default_rng(seed)
    data = np.empty((ny, 132))
    data[:] = rng.normal(0, rn, data.shape) + levels[:, None]
    if right:
        return data, Section(0, 32, 0, ny), Section(32, 132, 0, ny)
    return data, Section(100, 132, 0, ny), Section(0, 100, 0, ny)


def test_overscan_modes():
    ny = 400
    y = np.arange(ny)
    truth = 700 + 3 * np.sin(y / 40.0) + 2e-5 * (y - 200) ** 2
    data, biassec, datasec = _amp(truth, ny)
    data[57, 100:132] += 300  # a deviant row in the overscan
    row = ovs.measure(data, biassec, datasec, 4, ovs.OverscanParams("row"))
    assert row.section == Section(104, 131, 0, ny)  # [1025:1056] -> [1029:1055] in EEV's terms
    good = np.ones(ny, bool)
    good[57] = False
    assert np.std(row.levels[good] - truth[good]) == pytest.approx(2.0 / np.sqrt(27), rel=0.2)
    assert abs(row.levels[57] - truth[57]) < 2  # the deviant row was replaced
    assert row.rms == pytest.approx(2.0, rel=0.3)
    cheb = ovs.measure(data, biassec, datasec, 4, ovs.OverscanParams("chebyshev", order=8))
    assert np.max(np.abs(cheb.levels - truth)) < 0.6
    spline = ovs.measure(data, biassec, datasec, 4, ovs.OverscanParams("spline", order=8))
    assert np.max(np.abs(spline.levels - truth)) < 0.6
    const = ovs.measure(data, biassec, datasec, 4, ovs.OverscanParams("constant"))
    assert np.ptp(const.levels) == 0 and abs(const.mean - truth.mean()) < 0.3
    none = ovs.measure(data, biassec, datasec, 4, ovs.OverscanParams("none"))
    assert (none.levels == 0).all() and none.section is None
    data, biassec, datasec = _amp(truth, ny, right=True)
    assert ovs.measure(data, biassec, datasec, 5, ovs.OverscanParams()).section == Section(1, 27, 0, ny)


def test_overscan_follows_a_ripple():
    """The evidence for the row mode on Hamamatsu: a 3 ADU ripple over 300 rows (overscan.py's docstring)."""
    ny, rn = 4224, 2.2
    truth = 700 + 3 * np.sin(2 * np.pi * np.arange(ny) / 300.0)
    data, biassec, datasec = _amp(truth, ny, rn=rn)
    row = ovs.measure(data, biassec, datasec, None, ovs.OverscanParams())
    cheb = ovs.measure(data, biassec, datasec, None, ovs.OverscanParams("chebyshev", order=6), bottom_rows=48)
    assert np.std(row.levels - truth) == pytest.approx(rn / np.sqrt(27), rel=0.1)
    assert np.std(cheb.levels[48:] - truth[48:]) > 1.8  # a smooth fit cannot follow it
    assert ovs.fit_skip(ovs.OverscanParams("chebyshev"), 48, 0, 2) == 24  # the bottom rows stay out of fits
    assert ovs.fit_skip(ovs.OverscanParams("chebyshev"), 48, 48, 2) == 0  # ... unless already trimmed
    assert ovs.OverscanParams().mode == "row"
    with pytest.raises(ParameterError, match="OverscanParams: mode = 'poly': choose from row, constant"):
        ovs.OverscanParams("poly")


@pytest.mark.e2e  # decompresses the 1x1 masks (6 s)
def test_masks_rebinned():
    full = Section(0, 2048, 0, 4608)
    b4 = static_mask(DETID, "bpm", 2, full, (4, 4))
    b2 = static_mask(DETID, "bpm", 2, full, (2, 2))
    b1x2 = static_mask(DETID, "bpm", 2, full, (1, 2))
    assert b4.shape == (1152, 512) and b2.shape == (2304, 1024) and b1x2.shape == (2304, 2048)
    assert b4.sum() == 10942 and b2.sum() == 4 * 10942 and b1x2.sum() == 8 * 10942
    b8 = rebin_mask(b4, (4, 4), full, (8, 8))
    assert b8.sum() <= b4.sum() and b8.any()
    roi = static_mask(DETID, "bpm", 2, Section(0, 2048, 1792, 2816), (2, 2))
    np.testing.assert_array_equal(roi, b2[896:1408])
    unlit4 = static_mask(DETID, "illum", 1, full, (4, 4))
    assert 0.4 < unlit4.mean() < 0.55
    assert static_mask("BI11-41-4k-2,BI13-19-4k-3,BI12-34-4k-1", "bpm", 1, full, (2, 2)) is None  # none packaged


@pytest.mark.e2e  # decompresses every packaged mask twice (28 s)
def test_every_packaged_mask_is_placed_whole():
    """Each packaged mask (per CCD or per amplifier) lands on its CCDs by DETSEC with nothing lost."""
    import bz2
    import io

    from astropy.io import fits

    from gmosred import instruments
    from gmosred.calibrate import masks

    rows = instruments.static_masks()
    assert {(m.instrument, m.kind) for m in rows} >= {("GMOS-N", "illum"), ("GMOS-S", "illum"), ("GMOS-N", "bpm"),
                                                     ("GMOS-S", "bpm")}
    for m in rows:
        det = instruments.detector_set(m.detid)
        binning, whole = masks.load(str(m.path), det.ccd_shape)
        assert binning == m.binning and sorted(whole) == [1, 2, 3], m.file
        ny, nx = det.ccd_shape
        assert all(w.shape == (ny // binning[1], nx // binning[0]) for w in whole.values()), m.file
        with fits.open(io.BytesIO(bz2.decompress(m.path.read_bytes()))) as hdul:
            flagged = sum(int(np.count_nonzero(h.data)) for h in hdul[1:])
        assert sum(int(w.sum()) for w in whole.values()) == flagged, m.file
    # a Hamamatsu CCD2 amplifier (DETSEC [2561:3072]) is columns 256:512 of CCD2 at 2x2
    m = instruments.static_mask_file("BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1", "illum", (2, 2))
    with fits.open(io.BytesIO(bz2.decompress(m.path.read_bytes()))) as hdul:
        amp = next(h.data for h in hdul[1:] if h.header["DETSEC"] == "[2561:3072,1:4224]")
    plane = static_mask(m.detid, "illum", 2, Section(0, 2048, 0, 4224), (2, 2))
    np.testing.assert_array_equal(plane[:, 256:512], amp != 0)


def test_mask_choice():
    from gmosred import instruments

    ham_s = "BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1"
    assert instruments.static_mask_file(ham_s, "illum", (4, 4)).version == 2  # the highest version
    assert instruments.static_mask_file(ham_s, "illum", (1, 2)).binning == (1, 1)  # the finest, rebinned
    assert instruments.static_mask_file(ham_s, "illum", (2, 2), "2016-03-01").binning == (2, 2)
    assert instruments.static_mask_file("e2v 10031-23-05,10031-01-03,10031-18-04", "bpm", (2, 2)) is None


# ---------------------------------------------------------------- master bias
def test_master_bias_matches_truth(small_run, cals):
    out, truth = small_run
    work, bias, flats = cals
    mb = frame.read_processed(bias)
    assert mb.phu["NCOMBINE"] == 5 and mb.phu["OVSMODE"] == "row" and "GBIAS" in mb.phu
    rec = truth.frames[0]
    for p in mb.planes:
        c = p.extver
        rn = rec["read_noise_e"][c - 1] / rec["gain"][c - 1]
        expected = np.sqrt((rn**2 + 1 / 12) / 5)  # read noise and ADU rounding, 5 frames
        resid = p.sci - truth.detector.bias2d[c - 1]
        assert abs(resid.mean()) < 0.02
        assert resid.std() == pytest.approx(expected, rel=0.08)
        assert np.median(p.var) == pytest.approx(expected**2, rel=0.25)
        assert p.header["OVERSEC"] in ("[517:543,1:1152]", "[2:28,1:1152]") and p.header["BUNIT"] == "adu"


# ---------------------------------------------------------------- master flat
@pytest.mark.parametrize("band", ["r", "i", "Ha"])
def test_master_flat_matches_truth(small_run, cals, band):
    out, truth = small_run
    work, bias, flats = cals
    mf = frame.read_processed(flats[band])
    assert mf.phu["NCOMBINE"] == 3 and mf.phu["FLATMODE"] == "ccd2"
    for p in mf.planes:
        c = p.extver
        true = truth.detector.flat[band][c - 1]
        lit = truth.detector.illum[c - 1] == 1
        good = lit & (truth.detector.badpix[c - 1] == 0) & ((p.dq & (dqbits.FAIL | dqbits.UNILLUMINATED)) == 0)
        ratio = p.sci / true
        # overall level (the CCD-to-CCD sensitivity stays in the flat) and large scale, a few tenths of a percent
        assert np.median(ratio[good]) == pytest.approx(1.0, abs=0.002)
        blocks = [np.median(ratio[y:y + 64, x:x + 64][good[y:y + 64, x:x + 64]])
                  for y in range(0, 1152, 64) for x in range(0, 512, 64) if good[y:y + 64, x:x + 64].mean() > 0.8]
        assert np.max(np.abs(np.array(blocks) - 1)) < 0.004
        # pixel to pixel (large scale taken out): the photon limit of the three flats, and VAR says so
        b = 16
        blocks16 = np.nanmedian(np.where(good, ratio, np.nan).reshape(1152 // b, b, 512 // b, b), axis=(1, 3))
        smooth = np.repeat(np.repeat(np.nan_to_num(blocks16, nan=1.0), b, axis=0), b, axis=1)
        z = ((ratio - smooth) * true)[good] / np.sqrt(p.var[good])
        assert 1.4826 * np.median(np.abs(z - np.median(z))) == pytest.approx(1.0, abs=0.05)
        assert np.mean(np.abs(z) > 5) < 1e-3
        # unilluminated pixels: 1, flagged 64
        unlit = truth.detector.illum[c - 1] < 1
        assert (p.sci[truth.detector.illum[c - 1] == 0] == 1).all()
        np.testing.assert_array_equal((p.dq & dqbits.UNILLUMINATED) > 0, unlit)
    assert mf.plane(1).sci[truth.detector.illum[0] == 1].mean() != pytest.approx(1.0, abs=0.005)


def test_flat_normalised_per_ccd(small_run, cals, tmp_path):
    out, truth = small_run
    work, bias, flats = cals
    files = [_raw(out, r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == "r"]
    per = frame.read_processed(make_master_flat(files, tmp_path / "f.fits", bias=bias, params=FlatParams(normalize="ccd")))
    for p in per.planes:
        good = (p.dq & (dqbits.FAIL | dqbits.UNILLUMINATED)) == 0
        assert np.median(p.sci[good]) == pytest.approx(1.0, abs=0.01)


def test_bad_flats_left_out(small_run, cals, tmp_path, caplog):
    out, truth = small_run
    work, bias, flats = cals
    files = [_raw(out, r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == "r"]
    with fits.open(files[0]) as h:
        h[2].data[100:1000, 50:450] = 65535
        h.writeto(tmp_path / "saturated.fits")
    with fits.open(files[1]) as h:
        for ext in h[1:]:
            ext.data = np.full(ext.data.shape, 700, np.uint16)
        h.writeto(tmp_path / "dark.fits")
    (tmp_path / "broken.fits").write_bytes(open(files[2], "rb").read()[:100000])
    with caplog.at_level(logging.WARNING, logger="gmosred"):
        make_master_flat([str(tmp_path / n) for n in ("saturated.fits", "dark.fits", "broken.fits")] + files[1:],
                         tmp_path / "MCflat_r.fits", bias=bias)
    text = caplog.text
    assert "saturated.fits: saturated" in text and "dark.fits: underexposed" in text
    assert "broken.fits: truncated" in text
    assert frame.read_processed(tmp_path / "MCflat_r.fits").phu["NCOMBINE"] == 2


# ---------------------------------------------------------------- science
@pytest.fixture(scope="module")
def reduced(small_run, cals):
    out, truth = small_run
    work, bias, flats = cals
    recs = [r for r in truth.frames if r["kind"] == "science" and r["band"] == "r"][::4]
    recs += [r for r in truth.frames if r["kind"] == "science" and r["band"] == "i"][::2]
    done = {}
    for rec in recs:
        done[rec["file"]] = (rec, reduce_frame(_raw(out, rec), work, bias=bias, flat=flats[rec["band"]]))
    return done


def test_science_matches_truth(small_run, reduced):
    """Normalised residuals against the truth scene have unit scatter: SCI and VAR are both right."""
    out, truth = small_run
    for name, (rec, path) in reduced.items():
        f = frame.read_processed(path)
        assert f.phu["GIREDUCE"] and f.phu["BIASIM"] == "MCbias.fits" and f.phu["FLATIM"] == f"MCflat_{rec['band']}.fits"
        extras = truth.extras(name)
        for p in f.planes:
            c = p.extver
            assert p.header["GAIN"] == 1.0 and p.header["GAINMULT"] == rec["gain"][c - 1]
            assert np.isfinite(p.sci).all() and np.isfinite(p.var).all()
            model = truth.electrons(rec, c) / truth.detector.flat[rec["band"]][c - 1]
            good = (p.dq & (dqbits.FAIL | dqbits.UNILLUMINATED)) == 0
            good[extras[f"cr{c}_y"], extras[f"cr{c}_x"]] = False
            z = (p.sci - model)[good] / np.sqrt(p.var[good])
            assert abs(z.mean()) < 0.1
            assert z.std() == pytest.approx(1.0, abs=0.03)
            # flat where the truth is flat: large-scale residual structure below 0.5% of the sky
            resid = np.where(good, p.sci - model, np.nan)
            resid[:, (~good).all(axis=0)] = 0  # columns without data
            blocks = np.nanmedian(resid.reshape(-1, 64, 8, 64), axis=(1, 3))
            # blocks at least half lit (the limit below is for a block's worth of pixels)
            lit_blocks = np.isfinite(blocks) & (good.reshape(-1, 64, 8, 64).mean(axis=(1, 3)) > 0.5)
            assert np.nanmax(np.abs(blocks[lit_blocks])) < 0.005 * rec["sky_e"] + 3 * np.sqrt(rec["sky_e"]) / 64


def test_science_dq_exact(small_run, reduced):
    """Every bad and saturated pixel is flagged, and nothing else; unlit pixels carry 64."""
    out, truth = small_run
    for name, (rec, path) in reduced.items():
        f = frame.read_processed(path)
        extras = truth.extras(name)
        for p in f.planes:
            c = p.extver
            sat = np.zeros(p.sci.shape, bool)
            sat[extras[f"sat{c}_y"], extras[f"sat{c}_x"]] = True
            np.testing.assert_array_equal((p.dq & dqbits.SATURATED) > 0, sat)
            np.testing.assert_array_equal((p.dq & dqbits.BAD_PIXEL) > 0, truth.detector.badpix[c - 1] > 0)
            np.testing.assert_array_equal((p.dq & dqbits.UNILLUMINATED) > 0, truth.detector.illum[c - 1] < 1)
            assert not (p.dq & ~np.uint16(dqbits.BAD_PIXEL | dqbits.SATURATED | dqbits.UNILLUMINATED)).any()


def test_star_fluxes_in_electrons(small_run, reduced):
    from gmosred.simulate import truth as truthmod

    out, truth = small_run
    checked = 0
    for name, (rec, path) in reduced.items():
        if rec["band"] != "i":  # r sees the nebula's lines: no flat local background for simple apertures
            continue
        extras = truth.extras(name)
        x2, y2 = truthmod.star_pixels(truth, truth.stars, rec)
        flux = truthmod.star_electrons(truthmod.model.gmos_magnitudes(truth.stars, rec["band"]), rec["band"], rec["airmass"], rec["exptime"])
        for p in frame.read_processed(path).planes:
            c = p.extver
            cosmic = np.zeros(p.sci.shape, bool)
            cosmic[extras[f"cr{c}_y"], extras[f"cr{c}_x"]] = True
            x, y = truthmod._ccd2_to_ccd(truth.layout, c, x2, y2)
            r = 10
            for k in np.argsort(-flux)[:600]:
                xi, yi = int(round(x[k])), int(round(y[k]))
                box = (slice(yi - r, yi + r + 1), slice(xi - r, xi + r + 1))
                if not (2 * r < xi < 512 - 2 * r and 2 * r < yi < 1152 - 2 * r) or flux[k] < 1e4:
                    continue
                near = (np.hypot(x - x[k], y - y[k]) < 3 * r) & (flux > 0.003 * flux[k])
                if near.sum() > 1 or p.dq[yi - 2 * r:yi + 2 * r, xi - r:xi + r].any() \
                        or cosmic[yi - 2 * r:yi + 2 * r, xi - r:xi + r].any():
                    continue
                sky = np.median(np.r_[p.sci[yi - 2 * r:yi - r, xi - r:xi + r].ravel(),
                                      p.sci[yi + r:yi + 2 * r, xi - r:xi + r].ravel()])
                measured = p.sci[box].sum() - sky * p.sci[box].size
                err = np.sqrt(p.var[box].sum())
                assert measured == pytest.approx(flux[k], abs=4 * err + 0.01 * flux[k])
                checked += 1
    assert checked >= 5


# ---------------------------------------------------------------- mismatches and bad input
def test_calibration_mismatches(small_run, cals, tmp_path):
    from gmosred.simulate import layouts

    out, truth = small_run
    work, bias, flats = cals
    sci = [r for r in truth.frames if r["kind"] == "science" and r["band"] == "r"][0]
    with pytest.raises(GmosredError, match=r"flat .*MCflat_i.fits does not fit .*: filter: i in .*, r in "):
        reduce_frame(_raw(out, sci), tmp_path, bias=bias, flat=flats["i"])
    other = [str(layouts.write_raw(tmp_path / f"b{k}.fits", DETID, binning=(2, 2))) for k in range(2)]
    for p in other:
        with fits.open(p, mode="update") as h:
            h[0].header["OBSTYPE"] = "BIAS"
    bias22 = make_master_bias(other, tmp_path / "MCbias22.fits")
    with pytest.raises(GmosredError, match=r"bias .*MCbias22.fits does not fit .*: CCD binning: 2x2 in .*, 4x4 in "):
        reduce_frame(_raw(out, sci), tmp_path, bias=bias22)
    nobias = make_master_bias([_raw(out, r) for r in truth.frames if r["kind"] == "bias"], tmp_path / "MCbias_raw.fits",
                              overscan=ovs.OverscanParams("none"))
    with pytest.raises(GmosredError, match="overscan not subtracted in the bias but subtracted in the frame"):
        reduce_frame(_raw(out, sci), tmp_path, bias=nobias)
    assert not list(tmp_path.glob("rg*.fits"))


def test_one_bad_bias_of_many(small_run, tmp_path, caplog):
    out, truth = small_run
    files = [_raw(out, r) for r in truth.frames if r["kind"] == "bias"]
    bad = tmp_path / "S20060901S0999.fits"
    bad.write_bytes(open(files[0], "rb").read()[:50000])
    sci = [_raw(out, r) for r in truth.frames if r["kind"] == "science"][0]
    with caplog.at_level(logging.WARNING, logger="gmosred"):
        mb = make_master_bias(files + [str(bad), sci], tmp_path / "MCbias.fits")
    assert "S20060901S0999.fits: truncated" in caplog.text and "OBSTYPE is 'OBJECT'" in caplog.text
    assert frame.read_processed(mb).phu["NCOMBINE"] == 5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gmosred"):
        one = make_master_bias(files[:1], tmp_path / "one.fits")
    assert "only one master bias input" in caplog.text and one.exists()
    with pytest.raises(GmosredError, match="no usable master bias inputs"):
        make_master_bias([str(bad)], tmp_path / "none.fits")
    assert not (tmp_path / "none.fits").exists()


def test_many_frames_go_on(small_run, cals, tmp_path):
    out, truth = small_run
    work, bias, flats = cals
    recs = [r for r in truth.frames if r["kind"] == "science" and r["band"] == "i"][:2]
    broken = tmp_path / "S20060910S0999.fits"
    broken.write_text("junk")
    done, failed = run_each(reduce_frame, [(p, tmp_path, bias, flats["i"]) for p in
                                           (_raw(out, recs[0]), str(broken), _raw(out, recs[1]))],
                            desc="reduce", failed="not reduced", jobs=2, show_progress=False)
    assert len(done) == 2 and list(failed) == [str(broken)] and "not a FITS file" in failed[str(broken)]


def test_cli_end_to_end(small_run, tmp_path, capsys):
    out, truth = small_run
    biases = [_raw(out, r) for r in truth.frames if r["kind"] == "bias"]
    lst = tmp_path / "bias.lis"
    lst.write_text("\n".join(biases) + "\n")
    assert main(["bias", f"@{lst}", "-o", str(tmp_path / "MCbias.fits")]) == 0
    flats = [_raw(out, r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == "SII"]
    shutil.os.chdir(tmp_path)
    assert main(["flat", *flats, "--bias", "MCbias.fits"]) == 0
    assert (tmp_path / "MCflat_SII.fits").exists()
    sci = [_raw(out, r) for r in truth.frames if r["kind"] == "science" and r["band"] == "SII"][:2]
    assert main(["reduce", *sci, "--bias", "MCbias.fits", "--flat", "MCflat_SII.fits", "--outdir", "red"]) == 0
    assert sorted(p.name for p in (tmp_path / "red").iterdir()) == sorted("rg" + s.split("/")[-1] for s in sci)
