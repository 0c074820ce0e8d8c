import numpy as np
import pytest

from gmosred import instruments
from gmosred.instruments import UnknownInstrumentError

M8_DETID = "EEV2037-06-03EEV8194-19-04EEV8261-07-04"
FAST_HIGH_GAIN = 5.054  # amplifiers.csv, EEV 2037-06-03 left, 2006-08-31 on


@pytest.mark.parametrize("ampname, gain, rn", [
    ("EEV 2037-06-03, left", 2.372, 3.98), ("EEV 8194-19-04, left", 2.076, 3.85),
    ("EEV 8261-07-04, right", 2.097, 3.16)])
def test_m8_amplifiers(ampname, gain, rn):
    """The 2006 M8 data (slow read, low gain): values quoted in GMOS.md."""
    amp = instruments.amplifier(ampname, "2006-09-10", "slow", "low")
    assert (amp.gain, amp.read_noise) == (gain, rn)


def test_amplifier_epochs():
    name = "EEV 2037-06-03, left"
    before = instruments.amplifier(name, "2006-08-30", "slow", "low")
    on = instruments.amplifier(name, "2006-08-31", "slow", "low")  # valid_from is inclusive
    assert before.read_noise == 3.97 and on.read_noise == 3.98
    assert instruments.amplifier(name, "2006-08-31", "fast", "high").gain == FAST_HIGH_GAIN
    with pytest.raises(UnknownInstrumentError, match="no gain/read-noise entry"):
        instruments.amplifier(name, "2016-01-01", "slow", "low")  # EEV retired on GMOS-S
    with pytest.raises(UnknownInstrumentError, match="unknown GMOS amplifier 'EEV 0000'"):
        instruments.amplifier("EEV 0000", "2006-09-10", "slow", "low")


def test_every_detector_set():
    sets = {d.detid: d for d in instruments.detector_sets()}
    assert len(sets) == 7
    assert {d.instrument for d in sets.values()} == {"GMOS-S", "GMOS-N"}
    assert {d.family for d in sets.values()} == {"EEV", "e2v DD", "Hamamatsu"}
    for d in sets.values():
        assert len(d.placements) == 3
        assert d.placements[1].shift_x == 0 and d.placements[1].rotation_deg == 0
        assert d.placements[0].shift_x < -2000 < 2000 < d.placements[2].shift_x
    m8 = instruments.detector_set(M8_DETID + "  ")
    assert m8.pixel_scale * 2 == pytest.approx(0.146)  # PIXSCALE of a 2x2 EEV frame
    assert m8.ccd_shape == (4608, 2048) and m8.gap == 37
    assert instruments.detector_set("BI5-36-4k-2,BI11-33-4k-1,BI12-34-4k-1").ccd_shape == (4224, 2048)
    assert instruments.detector_set("BI13-20-4k-1,BI12-09-4k-2,BI13-18-4k-2").gap == 67
    assert m8.read_speed(5000) == "slow" and m8.read_speed(1000) == "fast"
    ham = instruments.detector_set("BI11-41-4k-2,BI13-19-4k-3,BI12-34-4k-1")
    assert ham.read_speed(5000) == "fast" and ham.read_speed(10000) == "slow"
    assert instruments.gain_setting(2.0) == "low" and instruments.gain_setting(5.0) == "high"
    with pytest.raises(UnknownInstrumentError, match="unknown GMOS DETID 'EEV9999'"):
        instruments.detector_set("EEV9999")


def test_placement_affine():
    """CCD2 maps to itself; CCD1's centre lands at the table's shift; binning scales it."""
    m8 = instruments.detector_set(M8_DETID)
    a2 = m8.placements[1].to_ccd2_affine(m8.ccd_shape, (2, 2))
    assert np.allclose(a2, [[1, 0, 0], [0, 1, 0]])
    for b in ((1, 1), (2, 2), (4, 4), (2, 1)):
        a1 = m8.placements[0].to_ccd2_affine(m8.ccd_shape, b)
        centre = np.array([(2048 / b[0] - 1) / 2, (4608 / b[1] - 1) / 2, 1.0])
        moved = a1 @ centre - centre[:2]
        assert moved == pytest.approx([-2086.49 / b[0], -0.22 / b[1]], abs=1e-9)
        # the linear part is the 0.011 deg CCW rotation, expressed in binned pixels
        c, s = np.cos(np.radians(0.011)), np.sin(np.radians(0.011))
        expected = np.array([[c, -s * b[1] / b[0]], [s * b[0] / b[1], c]])
        assert np.allclose(a1[:, :2], expected, atol=1e-12)


def test_other_tables():
    assert instruments.nominal_zeropoint(M8_DETID, "r_G0326") == 28.286
    assert instruments.nominal_zeropoint("EEV 8261-07-04", "i") == 27.883
    with pytest.raises(UnknownInstrumentError):
        instruments.nominal_zeropoint(M8_DETID, "Ha_G0336")
    assert instruments.full_well("GMOS + Hamamatsu", "BI5-36-4k-2, 1") == 108289.0
    assert instruments.full_well("GMOS + Blue1 + new CCD1", "EEV 2037-06-03, left") is None
    assert instruments.roi_name(0, 6144, 0, 4608) == "Full Frame"
    assert instruments.roi_name(2048, 4096, 0, 4224) == "CCD2"
    assert instruments.roi_name(0, 6144, 1792, 2816) == "Central Spectrum"
    assert instruments.roi_name(0, 100, 0, 100) == "Custom"
    assert instruments.filter_band("Ha_G0336") == "Ha" and instruments.filter_band("HaC_G0337 ") == "HaC"
    assert instruments.filter_wavelengths()["Ha"] == 0.656
