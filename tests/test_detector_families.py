"""Every detector family as right as EEV: masks, unlit pixels from the flat, Hamamatsu's bottom rows,
and the demo's truth checks on a simulated run of GMOS-S Hamamatsu and GMOS-N e2v DD (e2e)."""
from __future__ import annotations

import numpy as np
import pytest

from gmosred import instruments
from gmosred.calibrate import masks
from gmosred.calibrate import overscan as ovs
from gmosred.calibrate.ccd import CCDReader
from gmosred.calibrate.flat import FlatParams, _flag_unlit
from gmosred.calibrate.reduce import reduce_raw
from gmosred.frame import dq as dqbits
from gmosred.frame import model as frame
from gmosred.frame.model import Plane
from gmosred.frame.sections import Section
from gmosred.mosaic import mosaic_frame
from gmosred.simulate import layouts

HAM_S = "BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1"


def test_unlit_pixels_found_from_the_flat():
    """Without a mask, pixels whose flat is consistent with no light are flagged 64 and counted."""
    rng = np.random.default_rng(0)
    sci = np.ones((100, 200), np.float32) + rng.normal(0, 0.003, (100, 200)).astype(np.float32)
    sci[:, :80] = rng.normal(0, 1e-4, (100, 80))  # no light: ~0 +- 1e-4, as a real Hamamatsu flat
    sci[:, 80:90] = 0.05  # vignetted to 5%: below 10% of the level
    sci[:, 90:95] = 0.3  # partly lit: a real response, divided by
    p = Plane(sci, var=np.full(sci.shape, 1e-5, np.float32), dq=np.zeros(sci.shape, np.uint16))
    mask = np.zeros(sci.shape, bool)
    mask[:10, :] = True  # a mask flagging some lit rows too
    unlit = _flag_unlit(p, mask, 1.0, FlatParams())
    assert unlit[:, :90].all() and not unlit[10:, 90:].any()
    assert (p.dq[:, :90] & dqbits.UNILLUMINATED).all()
    assert p.header["NUNLITB"] == 10 * 90 and p.header["NUNLITD"] == 90 * 90 and p.header["NUNLITM"] == 10 * 110


@pytest.mark.parametrize("mode, rows", [("trim", 2088), ("flag", 2112)])
def test_hamamatsu_bottom_rows(tmp_path, mode, rows):
    """Trimmed by default as Gemini IRAF (TRIMSEC [..,25:2112] at 2x2; mosaic 3132x2088), or kept and flagged."""
    raw = frame.read_raw(layouts.write_raw(tmp_path / "S1.fits", HAM_S, date="2016-03-01"))
    params = ovs.OverscanParams(bottom_rows=mode)
    reader = CCDReader(raw, params)
    assert reader.shape(2) == (rows, 1024)
    hdr = reader.header(2)
    assert hdr["CCDSEC"] == ("[1:2048,49:4224]" if mode == "trim" else "[1:2048,1:4224]")
    assert hdr["TRIMSEC"].endswith(",25:2112]" if mode == "trim" else ",1:2112]")
    reader.close()
    # the known signal of the layout frame survives the trim: row 0 of the plane is CCD row 48 or 0
    y_unbinned = 48 if mode == "trim" else 0
    f = reduce_raw(raw, overscan=params)
    assert f.phu["BOTROWS"] == {"trim": "trimmed", "flag": "flagged"}[mode]
    p = f.plane(2)
    gain = raw.ccd_amps(2)[0].gain
    expected = layouts.detector_position(2048 + 0.5, y_unbinned + 0.5) * gain
    assert p.sci[0, 0] == pytest.approx(expected, abs=1.5 * gain)
    if mode == "flag":  # the kept bottom rows carry no light
        assert ((p.dq[:24] & dqbits.UNILLUMINATED) != 0).all()
    m = mosaic_frame(f)
    assert m.planes[0].sci.shape == (rows, 3132)  # IRAF's mosaic of a trimmed 2x2 Hamamatsu frame: 3132 x 2088


def test_calibration_made_the_other_way_is_refused(tmp_path):
    """A calibration whose bottom rows were flagged does not calibrate a frame whose rows are trimmed."""
    from gmosred.errors import GmosredError

    raw = frame.read_raw(layouts.write_raw(tmp_path / "S1.fits", HAM_S, date="2016-03-01"))
    flagged = reduce_raw(raw, overscan=ovs.OverscanParams(bottom_rows="flag"))
    with pytest.raises(GmosredError, match=r"bottom rows flagged in the bias but trimmed in the frame "
                                           r"\(the \[overscan\] bottom_rows setting\)"):
        reduce_raw(raw, flagged)


def test_masks_cover_every_family():
    """Each detector set in use since 2011 has its packaged illumination mask at 1x1 and 2x2."""
    for detid in (HAM_S, "BI13-20-4k-1,BI12-09-4k-2,BI13-18-4k-2", "e2v 10031-23-05,10031-01-03,10031-18-04",
                  "EEV2037-06-03EEV8194-19-04EEV8261-07-04", "EEV9273-16-03EEV9273-20-04EEV9273-20-03"):
        for b in ((1, 1), (2, 2)):
            assert instruments.static_mask_file(detid, "illum", b).binning == b, (detid, b)
    full = masks.static_mask(HAM_S, "illum", 1, Section(0, 2048, 0, 4224), (2, 2))
    assert 0.45 < full.mean() < 0.6  # half of CCD1 gets no light


# ---------------------------------------------------------------- simulated runs per family (e2e)
@pytest.mark.e2e
@pytest.mark.parametrize("detector", ["gmos-s-hamamatsu", "gmos-n-e2v"])
def test_demo_truth_per_family(tmp_path, detector, capsys):
    """The demo's truth checks (bias at its noise, flat < 0.2%, reduce scatter 1.00 +- 0.03, every unlit pixel
    DQ 64, mosaic shape and offset) pass on the family's simulated run with EEV's tolerances."""
    from gmosred.demo import run_demo

    assert run_demo(tmp_path, size="small", seed=3, jobs=2, detector=detector) == 0, capsys.readouterr().out


@pytest.mark.e2e
def test_unlit_flagged_without_a_mask(tmp_path, monkeypatch):
    """With the Hamamatsu illumination mask hidden, the flat alone flags every unlit pixel (DQ 64 in the
    flat and in the science frames), and no SCI value is beyond what the detector can hold."""
    from gmosred.calibrate.bias import make_master_bias
    from gmosred.calibrate.flat import make_master_flat
    from gmosred.simulate import load_truth, simulate_run

    out = simulate_run(tmp_path / "sim", size="small", seed=5, jobs=2, show_progress=False, detector="gmos-s-hamamatsu")
    truth = load_truth(out)
    real = instruments.static_mask_file
    monkeypatch.setattr(instruments, "static_mask_file",
                        lambda detid, kind, *a, **k: None if kind == "illum" else real(detid, kind, *a, **k))
    masks.static_mask.cache_clear()
    raw = lambda r: out / "raw" / f"{r['file']}.fits"  # noqa: E731
    bias = make_master_bias([raw(r) for r in truth.frames if r["kind"] == "bias"], tmp_path / "MCbias.fits")
    flat_path = make_master_flat([raw(r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == "r"],
                                 tmp_path / "MCflat_r.fits", bias=bias)
    flat = frame.read_processed(flat_path)
    b = truth.layout.binning
    for p in flat.planes:
        unlit = truth.detector.illum[p.extver - 1][48 // b:] == 0
        assert ((p.dq[unlit] & dqbits.UNILLUMINATED) != 0).all()
        assert p.header["NUNLITM"] == 0 and p.header["NUNLITD"] >= unlit.sum()  # all from the data
        assert (p.sci[unlit] == 1).all()
    rec = next(r for r in truth.frames if r["kind"] == "science" and r["band"] == "r")
    f = reduce_raw(frame.read_raw(raw(rec)), frame.read_processed(bias), flat)
    gains = rec["gain"]
    for p in f.planes:
        unlit = truth.detector.illum[p.extver - 1][48 // b:] == 0
        assert ((p.dq[unlit] & (dqbits.UNILLUMINATED | dqbits.NO_DATA)) != 0).all()
        assert np.nanmax(p.sci) < 65535 * max(gains) / FlatParams().unlit_below  # nothing divided by ~0
    masks.static_mask.cache_clear()
