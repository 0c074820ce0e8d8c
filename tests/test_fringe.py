"""Fringe frames and their removal (calibrate.fringe) against a known pattern, on synthetic reduced frames.

The frames are deep enough (sky 20 000 e-, as a 300 s i exposure) for the fringe frame to be limited by the
method, not by photons: GMOS's fringes have structure on the scale of a few binned pixels, which no smoothing
of a fringe frame made from shallow frames can recover (tested with the simulator's pattern: a Gaussian of 2
pixels already takes 8% of it).
"""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

SHAPE = (384, 192)  # one CCD at 4x4 binning, cut down
SKY = 20000.0
AMPLITUDE = 0.015  # fringe rms over the sky
NSTARS = 60


def _pattern(rng, c):
    from gmosred.simulate.model import fringe_pattern

    return fringe_pattern(rng, SHAPE, 4)


def _frames(n=5, dither=8.0, nebula=0.0, seed=3, nebular=None):
    """``n`` reduced-like frames (3 CCDs) dithered by ``dither`` arcsec, with stars, the fringe, noise, and in the
    first ``nebular`` (all by default) a nebula of peak ``nebula`` times the sky; and the true patterns."""
    from gmosred.frame.model import Frame, Plane

    rng = np.random.default_rng(seed)
    patterns = [_pattern(rng, c) for c in range(3)]
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    stars = np.column_stack([rng.uniform(0, SHAPE[1], NSTARS), rng.uniform(0, SHAPE[0], NSTARS), rng.uniform(2e4, 2e6, NSTARS)])
    frames, strengths = [], []
    for k in range(n):
        phu = fits.Header({"DETID": "EEV2037-06-03EEV8194-19-04EEV8261-07-04", "FILTER2": "i_G0327",
                           "RA": 270.0 + k * dither / 3600.0 / np.cos(np.radians(-24.0)), "DEC": -24.0,
                           "GIREDUCE": "2026-01-01T00:00:00", "CCDSUM": "4 4"})
        strength = AMPLITUDE * SKY * rng.uniform(0.7, 1.3)
        strengths.append(strength)
        planes = []
        for c in range(3):
            shift = k * dither / 0.292  # pixels at 4x4
            img = np.full(SHAPE, SKY, np.float64) + strength * patterns[c]
            img += (nebula if k < (n if nebular is None else nebular) else 0.0) * SKY * np.exp(-((xx - 96 - shift) ** 2 + (yy - 190) ** 2) / (2 * 60.0**2))
            for x, y, f in stars:
                img += f / (2 * np.pi * 1.2**2) * np.exp(-((xx - x - shift) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
            var = img + 25.0
            sci = rng.normal(img, np.sqrt(var)).astype(np.float32)
            planes.append(Plane(sci, fits.Header({"CCDSUM": "4 4"}), var.astype(np.float32),
                                np.zeros(SHAPE, np.uint16), extver=c + 1))
        frames.append(Frame(phu, planes))
    return frames, patterns, strengths


def test_the_fringe_frame_is_photon_limited_and_its_removal_leaves_honest_noise():
    """The frames' strengths are found to 1%; where it has data the fringe frame is the true pattern to within
    1.05x its own VAR (pixels covered by a star in every frame have none and are left uncorrected); removal leaves
    under 3% of the injected fringe in every frame and CCD, both in the frames the fringe frame was made from
    (fitted against it without their own contribution) and in one that is not; the defringed sky has unit scatter
    in its VAR (the fringe frame's VAR, scaled, added); FRINGAMP is the injected fringe (on the fringe frame's scales)."""
    from gmosred.calibrate import fringe

    from gmosred.measure.sources import smooth_background

    frames, patterns, strengths = _frames(n=6)
    names = [f"rgS{k}.fits" for k in range(6)]
    master = fringe.make_fringe_frame(frames[:5], names=names[:5])  # the sixth is independent of it
    assert list(master.tables["FRINGEIN"].data["FILENAME"]) == names[:5]
    # each frame's strength, relative: not pulled towards the mean by the frame's own noise and weight
    fitted = master.tables["FRINGEIN"].data["STRENGTH"]
    true = np.asarray(strengths[:5]) / np.median(strengths[:5])
    assert np.abs(fitted / true - 1).max() < 0.01, fitted / true
    # the fringe frame has the frames' large-scale background removed, and the pattern's largest scales with it:
    # they are sky to every later step
    width = fringe.FringeParams().smooth / 4
    small = [t - smooth_background(t, np.ones(t.shape, bool), width, np.zeros(t.shape, np.float32)) for t in patterns]
    for p, true in zip(master.planes, small):
        has = p.extra["USED"] != 0
        assert 0.8 < has.mean() < 1 and ((p.dq[~has] & 16) > 0).all()
        a = float((p.sci[has] * true[has]).sum() / (true[has] ** 2).sum())
        err = np.sqrt(np.mean((p.sci - a * true)[has] ** 2))
        assert err < 1.05 * np.sqrt(np.mean(p.var[has])), (err, np.sqrt(np.mean(p.var[has])))
    for frame, strength, name in zip(frames, strengths, names):
        out, scales, amp, res = fringe.remove_fringe(frame, master, name=name)
        assert amp == pytest.approx(strength * np.sqrt(np.mean([t.var() for t in small])), rel=0.05)
        for p, q, full, true in zip(frame.planes, out.planes, patterns, small):
            model = SKY + strength * full
            sky = (np.abs(p.sci - model) < 4 * np.sqrt(p.var)) & (q.header["FRINGUNC"] < 1)  # no star
            sky &= np.abs(q.var - p.var) > 0  # corrected
            left = q.sci - SKY - strength * (full - true)
            k = float((left[sky] * true[sky]).sum() / (true[sky] ** 2).sum())
            assert abs(k) < 0.03 * strength, (name, k / strength)
            pull = left[sky] / np.sqrt(q.var[sky])
            assert 0.97 < 1.4826 * np.median(np.abs(pull - np.median(pull))) < 1.03, name
            assert (q.var >= p.var).all() and (q.var > p.var).any()
            assert q.header["FRINGSCL"] != 0 and q.header["FRINGERR"] > 0


def test_too_few_dithered_frames_or_nebular_frames_are_refused_with_one_line(caplog):
    from gmosred.calibrate import fringe
    from gmosred.errors import GmosredError

    frames, _, _ = _frames(n=4, dither=0.0)
    with pytest.raises(GmosredError, match="1 pointing"):
        fringe.make_fringe_frame(frames)
    nebular, _, _ = _frames(n=4, nebula=0.3, nebular=3)
    with pytest.raises(GmosredError, match="1 of 4 frames usable"):
        fringe.make_fringe_frame(nebular)
    lines = [r.getMessage() for r in caplog.records if "left out of the fringe frame" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["frame 1", "frame 2", "frame 3"]
    assert all("nebulosity" in line for line in lines)


def test_which_frames_fringe_is_the_detector_table():
    from gmosred import instruments
    from gmosred.calibrate.fringe import FringeParams, not_fringing

    eev = "EEV2037-06-03EEV8194-19-04EEV8261-07-04"
    assert not_fringing(eev, "i_G0327") is None
    assert not_fringing(eev, "r_G0326") == "r does not fringe on EEV CCDs"
    assert not_fringing(eev, "r_G0326", FringeParams(filters="r, i")) is None
    assert "not among the filters" in not_fringing(eev, "z_G0328", FringeParams(filters="r, i"))
    assert instruments.fringes("Hamamatsu", "z_G0328") and not instruments.fringes("Hamamatsu", "i_G0327")
    with pytest.raises(instruments.UnknownInstrumentError, match="no fringing facts"):
        instruments.fringes("CCD-X", "i")
