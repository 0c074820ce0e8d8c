"""Mosaic: geometry for every detector set, exact VAR/DQ propagation, truth on the simulated run."""
import logging

import numpy as np
import pytest
from astropy.io import fits

from gmosred.frame import dq as dqbits
from gmosred.frame import model as frame
from gmosred import instruments
from gmosred.calibrate.reduce import ReduceParams, reduce_frame
from gmosred.cli import main
from gmosred.errors import GmosredError
from gmosred.frame.model import Frame, Plane
from gmosred.mosaic import layout, mosaic_file, mosaic_frame
from gmosred.pipeline.runners import run_each
from gmosred.engines.resample import resample
from gmosred.frame.sections import Section

M8 = "EEV2037-06-03EEV8194-19-04EEV8261-07-04"


# ---------------------------------------------------------------- the resampling core
def test_resample_var_and_dq():
    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, (400, 400)).astype(np.float32)
    var = np.ones_like(img)
    dq = np.zeros(img.shape, np.uint16)
    dq[200, 200] = dqbits.BAD_PIXEL
    m = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5]])  # half-pixel shift: linear weights 1/4 each
    for kernel, expected, n_flag in (("linear", 0.25, 4), ("cubic", None, 16), ("nearest", 1.0, 1)):
        s, v, d = resample(img, var, dq, m, (398, 398), kernel)
        inner = (slice(5, -5), slice(5, -5))
        assert np.var(s[inner]) == pytest.approx(np.mean(v[inner]), rel=0.03)  # VAR is the true variance
        if expected is not None:
            assert np.allclose(v[inner], expected)
        assert ((d & dqbits.BAD_PIXEL) > 0).sum() == n_flag
    # interpolating VAR like the data (IRAF, DRAGONS) would give 1.0 here, four times the truth


def test_resample_conserves_flux():
    y, x = np.mgrid[0:200, 0:200]
    blob = np.exp(-0.5 * (((x - 97.3) / 2.1) ** 2 + ((y - 101.6) / 1.7) ** 2)).astype(np.float32)
    t = np.radians(0.3)
    m = np.array([[np.cos(t), -np.sin(t), 1.37], [np.sin(t), np.cos(t), -2.21]])
    for kernel in ("linear", "cubic"):
        s, v, d = resample(blob, None, None, m, (200, 200), kernel)
        assert s.sum() == pytest.approx(blob.sum(), rel=1e-4)
    with pytest.raises(ValueError, match="interpolant 'lanczos'"):
        resample(blob, None, None, m, (10, 10), "lanczos")


def test_resample_agrees_with_scipy():
    """Linear resampling through a rotation and shift equals scipy.ndimage's order-1 affine transform
    (times the map's area factor) to float32 precision, away from the edges."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    img = ndimage.gaussian_filter(rng.normal(100, 20, (300, 260)), 2).astype(np.float32)
    t = np.radians(0.4)
    m = np.array([[1.001 * np.cos(t), -np.sin(t), 2.37], [np.sin(t), 0.999 * np.cos(t), -1.61]])
    ours, _, _ = resample(img, None, None, m, (290, 250), "linear")
    theirs = ndimage.affine_transform(img.astype(np.float64), m[::-1, 1::-1], offset=m[::-1, 2], output_shape=(290, 250),
                                      order=1, mode="nearest") * abs(np.linalg.det(m[:, :2]))
    inner = (slice(5, -5), slice(5, -5))
    np.testing.assert_allclose(ours[inner], theirs[inner], rtol=2e-6)


# ---------------------------------------------------------------- geometry for every detector set
def _planes(detid, binning, roi):
    det = instruments.detector_set(detid)
    r = [x for x in instruments.named_rois() if x.name == roi and x.y2 <= det.ccd_shape[0]][0]
    bx, by = binning
    planes = []
    for c in (1, 2, 3):
        x1, x2 = max(r.x1, (c - 1) * 2048), min(r.x2, c * 2048)
        if x2 <= x1:
            continue
        ccdsec = Section(x1 - (c - 1) * 2048, x2 - (c - 1) * 2048, r.y1, r.y2)
        ny, nx = (ccdsec.y2 - ccdsec.y1) // by, (ccdsec.x2 - ccdsec.x1) // bx
        xf = np.arange(nx) + ccdsec.x1 / bx  # full-CCD binned coordinates
        yf = np.arange(ny)[:, None] + ccdsec.y1 / by
        sci = (100 * c + 0.37 * xf + 0.11 * yf).astype(np.float32)
        hdr = fits.Header({"CCDSUM": f"{bx} {by}", "CCDSEC": str(ccdsec),
                           "DETSEC": str(Section(x1, x2, r.y1, r.y2)), "CRPIX1": 10.0, "CRPIX2": 20.0})
        planes.append(Plane(sci, hdr, np.ones_like(sci), np.zeros(sci.shape, np.uint16), c))
    phu = fits.Header({"DETID": detid, "DETRO1X": r.x1 + 1, "DETRO1XS": (r.x2 - r.x1) // bx})
    return det, Frame(phu, planes)


@pytest.mark.parametrize("detid, binning", [(d.detid, (4, 4)) for d in instruments.detector_sets()] + [
    (M8, (2, 2)), *(pytest.param(M8, b, marks=pytest.mark.e2e) for b in ((2, 1), (1, 2), (1, 1))),
    ("BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1", (2, 2))])
def test_geometry_every_detector_set(detid, binning):
    """A plane that is linear in CCD coordinates is reproduced exactly through the mosaic's map."""
    det, f = _planes(detid, binning, "Full Frame")
    out = mosaic_frame(f, "linear").planes[0]
    bx, by = binning
    nxb = 2048 // bx
    assert out.sci.shape == (det.ccd_shape[0] // by, 3 * nxb + 2 * (det.gap // bx))
    geo = layout(det, binning, {p.extver: Section.parse(p.header["CCDSEC"]) for p in f.planes})
    for p in f.planes:
        inv = np.linalg.inv(np.vstack([geo.to_output[p.extver], [0, 0, 1]]))
        ny, nx = p.sci.shape
        ys, xs = np.nonzero((out.dq & dqbits.NO_DATA) == 0)
        xi = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        yi = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        interior = (xi > 1) & (xi < nx - 2) & (yi > 1) & (yi < ny - 2)
        expected = 100 * p.extver + 0.37 * xi[interior] + 0.11 * yi[interior]
        np.testing.assert_allclose(out.sci[ys[interior], xs[interior]], expected, atol=2e-3)
        assert interior.sum() > 0.9 * nx * ny
    tiled = mosaic_frame(f, tile=True).planes[0]
    np.testing.assert_array_equal(tiled.sci[:, nxb + det.gap // bx: 2 * nxb + det.gap // bx], f.plane(2).sci)
    assert (tiled.dq[:, nxb:nxb + det.gap // bx] == dqbits.NO_DATA).all()


@pytest.mark.parametrize("roi, width", [("CCD2", 1024), ("Central Spectrum", 3108), ("Central Stamp", 150)])
def test_geometry_rois(roi, width):
    det, f = _planes(M8, (2, 2), roi)
    out = mosaic_frame(f).planes[0]
    ccdsec = Section.parse(f.plane(2).header["CCDSEC"])
    assert out.sci.shape == ((ccdsec.y2 - ccdsec.y1) // 2, width)
    x0 = int(round(out.header["CRPIX1"] - 10.0))
    np.testing.assert_array_equal(out.sci[:, x0:x0 + f.plane(2).sci.shape[1]], f.plane(2).sci)


def test_real_iraf_frame(real_raw, tmp_path, real):
    """Shape and CRPIX as Gemini IRAF's gmosaic made them for the real S20120922S0406."""
    path, _ = real_raw
    rg = reduce_frame(path, tmp_path, params=ReduceParams())
    m = frame.read_processed(mosaic_file(rg, tmp_path)).planes[0]
    text = (real / "mrgS20120922S0406_gmosaic_header.txt").read_text()
    iraf = {}
    for line in text.split("--- HDU 1 ---")[1].splitlines():
        if "=" in line[:10]:
            iraf[line[:8].strip()] = line[10:].split("/")[0].strip()
    assert m.sci.shape == (int(iraf["NAXIS2"]), int(iraf["NAXIS1"])) == (2304, 3108)
    assert m.header["CRPIX1"] == pytest.approx(float(iraf["CRPIX1"]), abs=1e-6)
    assert m.header["CRPIX2"] == pytest.approx(float(iraf["CRPIX2"]), abs=1e-6)
    assert m.header["CD1_1"] == pytest.approx(float(iraf["CD1_1"]), rel=1e-9)


# ---------------------------------------------------------------- against the truth
@pytest.fixture(scope="module")
def mosaics(small_run, tmp_path_factory):
    from reduced import reduce_and_mosaic

    out, truth = small_run
    recs = [r for r in truth.frames if r["kind"] == "science" and r["band"] == "i"][::3]
    return truth, reduce_and_mosaic(out, truth, tmp_path_factory.mktemp("mosaic"), recs)


def _centroid(img, x, y, sigma, iters=20):
    """Gaussian-windowed centroid (unbiased for symmetric profiles)."""
    for _ in range(iters):
        x0, y0 = int(round(x)), int(round(y))
        r = int(4 * sigma) + 2
        yy, xx = np.mgrid[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        cut = img[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1]
        w = np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2) * cut
        nx, ny = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        if abs(nx - x) < 1e-5 and abs(ny - y) < 1e-5:
            break
        x, y = nx, ny
    return x, y


def _aperture(img, x, y, r=12):
    """Sum in a (2r+1)^2 box."""
    return float(img[y - r:y + r + 1, x - r:x + r + 1].sum())


def test_star_positions_and_fluxes(mosaics):
    """Centroids land on the truth (relative to CCD2) within 0.05 px rms per CCD; fluxes kept to 0.1%."""
    from gmosred.simulate import truth as truthmod

    truth, res = mosaics
    b = truth.layout.binning
    offset = 2048 // b + 37 // b  # CCD2's place in the mosaic
    errors = {1: [], 2: [], 3: []}
    ratios = {1: [], 3: []}
    for rec, rg, mrg in res:
        m = frame.read_processed(mrg).planes[0]
        sky = np.median(m.sci[(m.dq == 0)])
        img = m.sci - sky
        x2, y2 = truthmod.star_pixels(truth, truth.stars, rec)
        flux = truthmod.star_electrons(truthmod.model.gmos_magnitudes(truth.stars, "i"), "i", rec["airmass"], rec["exptime"])
        sigma = rec["fwhm_arcsec"] / truth.layout.pixel_scale / 2.355
        xm, ym = x2 + offset, y2
        stars = []
        for k in np.argsort(-flux)[:800]:
            if not (2e4 < flux[k] < 4e5) or not (20 < xm[k] < m.sci.shape[1] - 20 and 20 < ym[k] < m.sci.shape[0] - 20):
                continue
            near = (np.hypot(xm - xm[k], ym - ym[k]) < 20) & (flux > 0.002 * flux[k])
            box = (slice(int(ym[k]) - 10, int(ym[k]) + 11), slice(int(xm[k]) - 10, int(xm[k]) + 11))
            if near.sum() > 1 or m.dq[box].any():
                continue
            cx, cy = _centroid(img, xm[k], ym[k], max(sigma, 0.8))
            ccd = 1 if xm[k] < 2048 // b else (2 if xm[k] < 2 * (2048 // b) + 37 // b else 3)
            errors[ccd].append(np.hypot(cx - xm[k], cy - ym[k]))
            if ccd != 2:
                stars.append((ccd, k, xm[k], ym[k], x2[k], y2[k]))
        # flux through the resampling, on the noiseless stars alone (so that only the mosaic is measured)
        from gmosred.simulate import model as simmodel

        model = frame.read_processed(rg)
        for p in model.planes:
            xs, ys = truthmod._ccd2_to_ccd(truth.layout, p.extver, x2, y2)
            p.sci = np.zeros(p.sci.shape)
            simmodel.add_stars(p.sci, xs, ys, flux, rec["fwhm_arcsec"] / truth.layout.pixel_scale)
        mm = mosaic_frame(model).planes[0]
        for ccd, k, xmk, ymk, x2k, y2k in stars:
            xc, yc = truthmod._ccd2_to_ccd(truth.layout, ccd, np.array([x2k]), np.array([y2k]))
            xc, yc = int(round(xc[0])), int(round(yc[0]))
            p = model.plane(ccd)
            if not (20 < xc < p.sci.shape[1] - 20 and 20 < yc < p.sci.shape[0] - 20) or \
                    (truth.detector.illum[ccd - 1][yc - 19:yc + 20, xc - 19:xc + 20] < 1).any():
                continue
            ratios[ccd].append(_aperture(mm.sci, int(round(xmk)), int(round(ymk))) / _aperture(p.sci, xc, yc))
    for ccd in (1, 2, 3):
        assert len(errors[ccd]) >= 4, ccd
        assert np.sqrt(np.mean(np.square(errors[ccd]))) < 0.05, (ccd, errors[ccd])
    for ccd in (1, 3):
        assert len(ratios[ccd]) >= 3
        assert abs(np.median(ratios[ccd]) - 1) < 0.001, ratios[ccd]


def test_noise_is_right_on_every_ccd(mosaics):
    """(SCI - truth)/sqrt(VAR) has unit scatter within 3% on every CCD of the mosaic.

    The truth is the noiseless scene, reduced and mosaicked the same way, so the residual is the
    resampled noise alone; VAR interpolated like the data (IRAF, DRAGONS) would give ~1.2-1.5 here.
    """
    truth, res = mosaics
    b = truth.layout.binning
    nxb, gap = 2048 // b, 37 // b
    for rec, rg, mrg in res[:2]:
        m = frame.read_processed(mrg).planes[0]
        model = frame.read_processed(rg)
        for p in model.planes:
            p.sci = truth.electrons(rec, p.extver) / truth.detector.flat["i"][p.extver - 1]
        expected = mosaic_frame(model).planes[0].sci
        good = m.dq == 0
        z = (m.sci - expected) / np.sqrt(np.where(m.var > 0, m.var, np.inf))
        for ccd, xs in ((1, slice(0, nxb)), (2, slice(nxb + gap, 2 * nxb + gap)), (3, slice(2 * (nxb + gap), None))):
            zz = z[:, xs][good[:, xs]]
            robust = 1.4826 * np.median(np.abs(zz - np.median(zz)))
            assert robust == pytest.approx(1.0, abs=0.03), (ccd, robust)


def test_gaps_and_headers(mosaics):
    truth, res = mosaics
    rec, rg, mrg = res[0]
    f = frame.read_processed(mrg)
    p = f.planes[0]
    b = truth.layout.binning
    nxb, gap = 2048 // b, 37 // b
    assert (p.dq[:, nxb + 1:nxb + gap - 1] == dqbits.NO_DATA).all()
    assert (p.sci[:, nxb + 1:nxb + gap - 1] == 0).all() and (p.var[:, nxb + 1:nxb + gap - 1] == 0).all()
    assert f.phu["GMSINTER"] == "linear" and "GMOSAIC" in f.phu and f.phu["PIXSCALE"] == pytest.approx(0.073 * b)
    rg2 = frame.read_processed(rg).plane(2)
    assert p.header["CRPIX1"] == pytest.approx(rg2.header["CRPIX1"] + nxb + gap)
    # unlit and bad pixels keep their flags through the resampling
    assert ((p.dq & dqbits.UNILLUMINATED) > 0).mean() > 0.2 and ((p.dq & dqbits.BAD_PIXEL) > 0).any()


def test_bad_inputs(small_run, mosaics, tmp_path, caplog):
    out, truth = small_run
    _, res = mosaics
    rec, rg, mrg = res[0]
    raw = out / "raw" / f"{rec['file']}.fits"
    with pytest.raises(GmosredError, match="is a raw file: reduce it first"):
        mosaic_file(raw, tmp_path)
    f = frame.read_processed(rg)
    frame.write(Frame(f.phu, f.planes[:2]), tmp_path / "rgno3.fits")
    with pytest.raises(GmosredError, match="CCD3 missing"):
        mosaic_file(tmp_path / "rgno3.fits", tmp_path)
    phu = f.phu.copy()
    phu["DETID"] = "EEV0000"
    frame.write(Frame(phu, f.planes), tmp_path / "rgunknown.fits")
    with pytest.raises(GmosredError, match="unknown GMOS DETID 'EEV0000'"):
        mosaic_file(tmp_path / "rgunknown.fits", tmp_path)
    with caplog.at_level(logging.WARNING, logger="gmosred"):
        done, failed = run_each(mosaic_file, [(p, tmp_path) for p in (raw, rg, tmp_path / "rgno3.fits")],
                                desc="mosaic", failed="not mosaicked", show_progress=False)
    assert len(done) == 1 and len(failed) == 2
    assert caplog.text.count("not mosaicked") == 2
    assert main(["mosaic", str(rg), "--outdir", str(tmp_path / "cli"), "--tile"]) == 0
    assert frame.read_processed(tmp_path / "cli" / f"m{rg.name}").phu["GMSINTER"] == "tile"
