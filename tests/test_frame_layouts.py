"""Raw files of every detector set, amplifier count, binning and ROI read into consistent sections."""
import numpy as np
import pytest

from gmosred.frame import model as frame
from gmosred import instruments
from gmosred.simulate import layouts

DETIDS = [d.detid for d in instruments.detector_sets()]


def _check(raw, binning, roi):
    bx, by = binning
    assert raw.binning == binning and raw.roi == roi
    for amp in raw.amps:
        data = amp.data[amp.datasec.slices].astype(float)
        det = amp.detsec
        xs = det.x1 + (np.arange(data.shape[1]) + 0.5) * bx - 0.5
        ys = det.y1 + (np.arange(data.shape[0]) + 0.5) * by - 0.5
        expected = np.rint(1000.0 + layouts.detector_position(xs[None, :], ys[:, None]))
        np.testing.assert_array_equal(data, expected)
        assert (amp.data[amp.biassec.slices] == 1000).all()
        assert amp.ccd == det.x1 // raw.detector.ccd_shape[1] + 1
        assert amp.datasec.shape == ((det.y2 - det.y1) // by, (det.x2 - det.x1) // bx)
        assert amp.gain > 0 and amp.read_noise >= 0


@pytest.mark.parametrize("detid", DETIDS)
def test_every_detector_set(tmp_path, detid):
    path = layouts.write_raw(tmp_path / "S1.fits", detid)
    raw = frame.read_raw(path)
    per_ccd = layouts.AMPS_PER_CCD[raw.detector.family]
    assert len(raw.amps) == 3 * per_ccd
    assert [len(raw.ccd_amps(c)) for c in (1, 2, 3)] == [per_ccd] * 3
    assert raw.read_speed == "slow" and raw.gain_setting == "low"
    _check(raw, (2, 2), "Full Frame")


def test_hamamatsu_12_amplifiers(tmp_path):
    raw = frame.read_raw(layouts.write_raw(tmp_path / "S1.fits", "BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1"))
    assert [a.data.shape for a in raw.amps] == [(2112, 288)] * 12
    assert [str(a.biassec) for a in raw.amps[:2]] == ["[257:288,1:2112]", "[1:32,1:2112]"]
    # left to right as in Gemini's real masks (DETSEC [2049:2560] is 'BI11-33-4k-1, 4')
    assert [a.ampname for a in raw.ccd_amps(2)] == [f"BI11-33-4k-1, {k}" for k in (4, 3, 2, 1)]
    amp = instruments.amplifier("BI11-33-4k-1, 3", "2016-03-01", "slow", "low")
    assert raw.ccd_amps(2)[1].gain == amp.gain


def test_eev_6_amplifiers(tmp_path):
    raw = frame.read_raw(layouts.write_raw(tmp_path / "S1.fits", "EEV2037-06-03EEV8194-19-04EEV8261-07-04",
                                           amps_per_ccd=2))
    assert [a.ampname for a in raw.ccd_amps(1)] == ["EEV 2037-06-03, left", "EEV 2037-06-03, right"]
    _check(raw, (2, 2), "Full Frame")


@pytest.mark.parametrize("binning", [(1, 1), (2, 1), (4, 4), (1, 2)])
def test_binnings(tmp_path, binning):
    raw = frame.read_raw(layouts.write_raw(tmp_path / "S1.fits", "EEV2037-06-03EEV8194-19-04EEV8261-07-04",
                                           binning=binning))
    _check(raw, binning, "Full Frame")
    assert raw.amps[0].data.shape == (4608 // binning[1], 2048 // binning[0] + 32)


@pytest.mark.parametrize("detid", ["EEV2037-06-03EEV8194-19-04EEV8261-07-04", "BI13-20-4k-1,BI12-09-4k-2,BI13-18-4k-2"])
@pytest.mark.parametrize("roi", ["CCD2", "Central Spectrum", "Central Stamp"])
def test_rois(tmp_path, detid, roi):
    raw = frame.read_raw(layouts.write_raw(tmp_path / "S1.fits", detid, roi=roi))
    _check(raw, (2, 2), roi)
    if roi != "Central Spectrum":
        assert {a.ccd for a in raw.amps} == {2}
