"""Fringe frames (gifringe) -> MCfringe_<filter>.fits, and their removal (girmfringe) -> f<rg...>.fits.

In the red the thin EEV and e2v DD CCDs fringe: an additive pattern fixed on the detector whose strength follows
the night-sky lines. Which detector family fringes in which filter is a table (``instruments/data/fringing.csv``,
DRAGONS' rule).

**The fringe frame** comes from reduced, dithered frames of one setup and filter. A first fringe frame (the median
of the frames with only DQ masked: the stars move, the fringes stay) is taken out of each frame before its sources
are looked for; then in each frame and CCD the sources (grown by ``grow`` seeing FWHM) and the DQ-flagged pixels
are masked and a large-scale background (a masked average ``smooth`` unbinned pixels wide) is removed, which takes
the sky level and extended emission and leaves the fringes; the residual is divided by the frame's sky level. A
frame is left out (one line) when too little of it is left unmasked, or when the large-scale structure of its sky
is stronger than ``max_structure`` of its level (a frame filled by a nebula, where "the genuine astrophysical
intensity variations completely overwhelm the fringe signature", as the cookbook says of M8). At least
``min_frames`` frames, dithered by ``min_dither`` arcsec, are needed: otherwise a star would sit at one place in all
of them and survive the combination. The frames are combined with the one combine engine (masked pixels ignored,
outliers clipped by VAR, weights sky x strength^2, VAR propagated), each divided by its fringe strength; the
strengths are each frame's projection on the fringe frame made without it (leave one out: its own noise would
pull every strength towards the mean), in three passes. A USED plane per CCD records which inputs went into each
pixel, and the FRINGEIN table their sky levels, strengths and weights, so that the removal can take a frame's own
contribution back out.

**Removal**: per CCD, the frame less its large-scale background is projected, on its masked sky pixels, onto the
fringe frame (without the frame, if it went in) after a Wiener filter (every spatial scale kept where the fringe
stands above the fringe frame's measured white noise). What a projection gives for a frame of unit strength was
measured on the inputs (FRINGDIL, FRINGDLX for frames that are not inputs; their scatter FRINGDSP enters the
error), so the scale is free of what dilutes every projection alike; the filtered fringe frame times the scale,
over the part of the fringe the filter keeps, is subtracted. A fringe frame not made by gmosred is fitted by
least squares corrected for its noise instead. The fringe frame's VAR times the scale squared is *added* to the
frame's VAR (girmfringe subtracts it). Headers: FRINGSCL and FRINGERR per CCD; in the primary header FRINGAMP,
the rms of the fringe in the frame's sky (e-), and FRINGRES, the rms of what the removal may leave or add (e-: the
scale's error times the pattern and the fringe frame's own noise times the scale; projecting the defringed sky onto
the same pattern would give zero by construction). A removal whose FRINGRES exceeds ``max_residual`` of FRINGAMP is
not made (the frame goes on unchanged, with why in SKIPPED).
"""
from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import instruments
from ..engines import combine as comb
from ..errors import GmosredError
from ..frame import dq as dqbits
from ..frame import provenance as prov
from ..frame.model import Frame, Plane, read_processed, stem, timestamp, write
from ..params import checked, param

log = logging.getLogger("gmosred")


@checked
class FringeParams:
    """Fringe frames and their removal (gifringe, girmfringe)."""

    smooth: float = param(150.0, "width of the large-scale background removed before the fringes are measured "
                                 "(unbinned pixels)", low=10.0)
    grow: float = param(2.0, "source masks grown by this many seeing FWHM", low=0.0)
    min_frames: int = param(3, "fewest frames a fringe frame is made from", low=2)
    min_dither: float = param(5.0, "least separation of the frames on the sky (arcsec)", low=0.0)
    min_unmasked: float = param(0.4, "least fraction of a frame left unmasked for it to be used", low=0.0, high=1.0)
    max_structure: float = param(0.02, "largest large-scale structure of a frame's sky (robust rms over its level) "
                                       "for it to be used", low=0.0, low_open=True)
    clip: float = param(3.0, "residual clipping of the removal's fit (sigma)", low=1.5)
    max_residual: float = param(0.5, "largest error of a removal (FRINGRES) relative to the fringe it removes "
                                     "(FRINGAMP) for it to be made: a noisier fringe frame would add as much "
                                     "structure as it takes away", low=0.0, low_open=True)
    wiener: bool = param(True, "filter the fringe frame's noise (Wiener: every spatial scale kept where the fringe "
                               "stands above the noise) before it is fitted and subtracted")
    prefix: str = param("f", "prefix of the defringed frames' names")
    frame: str = param("", "a fringe frame to use (e.g. MCfringe_i.fits made from other programs' frames) for "
                           "the frames of its setup and filter, instead of one made from them")
    filters: str | None = param(None, "filters to defringe (comma-separated); none: those the detector table "
                                      "says fringe")


#: The fringe frame's combination: average, outliers clipped by each input's own VAR, VAR propagated.
FRINGE_COMBINE = comb.CombineParams(reject="varclip", var="propagate")


def not_fringing(detid: str, filter2: str, params: FringeParams = FringeParams()) -> str | None:
    """Why a frame of detector set ``detid`` and filter ``filter2`` needs no fringe removal (None: it does): the
    detector table, or ``params.filters``."""
    band = instruments.filter_band(filter2)
    if params.filters is not None:
        chosen = {f.strip() for f in params.filters.split(",") if f.strip()}
        return None if band in chosen else f"{band} is not among the filters to defringe ({params.filters})"
    family = instruments.detector_set(str(detid)).family
    return None if instruments.fringes(family, band) else f"{band} does not fringe on {family} CCDs"


def given_fringe(filter2: str, params: FringeParams = FringeParams()) -> str | None:
    """The user's fringe frame (``params.frame``) if it is of the frame's filter, else None."""
    if not params.frame:
        return None
    return params.frame if instruments.filter_band(_frame_filter(params.frame)) == instruments.filter_band(filter2) \
        else None


@cache
def _frame_filter(path: str) -> str:
    from ..frame.model import filter_name
    from ..errors import GmosFileError

    try:
        return filter_name(fits.getheader(path, 0))
    except (OSError, KeyError) as e:
        raise GmosFileError(path, f"cannot be read as a fringe frame ({e})") from None


# ------------------------------------------------------------------ the pure operations
def _scale_and_binning(frame: Frame) -> tuple[float, int]:
    det = instruments.detector_set(str(frame.phu["DETID"]))
    binning = int(str(frame.planes[0].header.get("CCDSUM", frame.phu.get("CCDSUM", "1 1"))).split()[0])
    return det.pixel_scale * binning, binning


def _sky(plane: Plane, pixel_scale: float, binning: int, params: FringeParams, fringe_model=None,
         find_sources: bool = True):
    """(large-scale background, usable sky pixels) of one CCD plane: the sources (found once ``fringe_model``, the
    fringe as far as it is known, is taken out: deep frames' fringes are significant structure) and DQ-flagged
    pixels masked."""
    from ..measure.sources import smooth_background, source_mask

    sci = np.asarray(plane.sci, np.float32)
    masked = ~np.isfinite(sci)
    if plane.dq is not None:
        masked |= (plane.dq & (dqbits.FAIL | dqbits.UNILLUMINATED)) != 0
    if find_sources:
        clean = sci if fringe_model is None else sci - fringe_model
        masked |= source_mask(clean, plane.var, plane.dq, pixel_scale, grow=params.grow)
    level = float(np.median(sci[~masked])) if (~masked).any() else 0.0
    back = smooth_background(np.where(masked, np.float32(level), sci), ~masked, params.smooth / binning,
                             np.full(sci.shape, np.float32(level)))
    return back, ~masked


def _offsets_arcsec(frames: list[Frame]) -> np.ndarray:
    """Telescope pointings (PHU RA, DEC) of the frames, in arcsec from the first."""
    ra = np.array([float(f.phu["RA"]) for f in frames])
    dec = np.array([float(f.phu["DEC"]) for f in frames])
    return np.column_stack([(ra - ra[0]) * np.cos(np.radians(dec[0])), dec - dec[0]]) * 3600.0


def _dithered(offsets: np.ndarray, min_dither: float) -> int:
    """The largest number of frames whose pointings are pairwise at least ``min_dither`` apart (greedy)."""
    chosen = []
    for k, p in enumerate(offsets):
        if all(np.hypot(*(p - offsets[j])) >= min_dither for j in chosen):
            chosen.append(k)
    return len(chosen)


def _fit_scale(resid, weight, pattern, clip: float, pattern_var=None) -> tuple[float, float]:
    """(scale, error) of ``pattern`` in ``resid`` by weighted least squares over the pixels of nonzero ``weight``,
    clipped at ``clip`` sigma (the residuals' robust scatter). With ``pattern_var`` (the pattern's own noise) the
    normal equation is corrected for it (sum w (f^2 - var_f)): a noisy pattern otherwise dilutes the scale."""
    use = (weight > 0) & np.isfinite(resid) & np.isfinite(pattern)
    r, w, f = resid[use].astype(np.float64), weight[use].astype(np.float64), pattern[use].astype(np.float64)
    fv = np.zeros(r.size) if pattern_var is None else np.asarray(pattern_var)[use].astype(np.float64)
    keep = np.ones(r.size, bool)
    s, err = 0.0, float("inf")
    for _ in range(5):
        ff = (w * (f * f - fv))[keep].sum()
        if ff <= 0:
            return 0.0, float("inf")
        s = float((w * f * r)[keep].sum() / ff)
        z = (r - s * f) * np.sqrt(w)
        sigma = 1.4826 * float(np.median(np.abs(z[keep])))
        new = np.abs(z) < clip * max(sigma, 1e-12)
        chi2 = float((z[new] ** 2).mean()) if new.any() else 1.0
        err = float(np.sqrt(max(chi2, 1e-12) / (w * f * f)[new].sum())) if new.any() else float("inf")
        if (new == keep).all():
            break
        keep = new
    return s, err


def _project(x, use, patterns, denom, clip: float):
    """([sum x p for each pattern p], sum d p0, error of the first sum's ratio to the second, sum d^2) over the ``use``
    pixels where all are finite, clipped at ``clip`` sigma of x less its fit by the first pattern p0. Against the
    fringe frame without the frame (p0) the denominator is its product with the whole fringe frame (``denom``):
    a frame's projection is then on the whole frame's scale, however much the frame itself weighs in it (over
    p0 squared, the strongest frames' strengths would come out low, the weakest' high)."""
    sel = use & np.isfinite(x) & np.isfinite(denom) & np.logical_and.reduce([np.isfinite(q) for q in patterns])
    xs = x[sel].astype(np.float64)
    ps = [q[sel].astype(np.float64) for q in patterns]
    cross = denom[sel].astype(np.float64) * ps[0]
    keep = np.ones(xs.size, bool)
    sigma = 0.0
    for _ in range(5):
        dd = cross[keep].sum()
        if dd <= 0:
            return [0.0] * len(ps), 0.0, float("inf"), 0.0
        r = (xs * ps[0])[keep].sum() / dd
        z = xs - r * ps[0]
        sigma = 1.4826 * float(np.median(np.abs(z[keep])))
        new = np.abs(z) < clip * max(sigma, 1e-30)
        if (new == keep).all():
            break
        keep = new
    dd = float(cross[keep].sum())
    return ([float((xs * q)[keep].sum()) for q in ps], dd, sigma * float(np.sqrt((ps[0] ** 2)[keep].sum())) / dd,
            float((denom[sel].astype(np.float64)[keep] ** 2).sum()))


def _filtered(pattern, var, has, params: FringeParams):
    """(pattern, VAR, part of the fringe kept) as the removal uses them: Wiener-filtered (``params.wiener``) or as
    they are."""
    if params.wiener:
        return wiener(pattern, var, has)
    return np.where(has, pattern, np.nan).astype(np.float32), np.asarray(var, np.float32), 1.0


def make_fringe_frame(frames: list[Frame], params: FringeParams = FringeParams(),
                      combine: comb.CombineParams = FRINGE_COMBINE, names: list[str] | None = None) -> Frame:
    """The fringe frame (per unit of fringe strength, relative to the sky) of reduced frames of one setup and
    filter, with a USED plane per CCD (bit k set where the k-th input, k < 63, went into the pixel) and the
    FRINGEIN table of the inputs (their sky levels, strengths and weights), from which the removal takes a frame's
    own contribution back out; refuses with one line when the frames cannot make one."""
    names = names or [f"frame {k + 1}" for k in range(len(frames))]
    scale, binning = _scale_and_binning(frames[0])
    # a first fringe frame: the median of the dithered frames with only their DQ masked (the stars move, the
    # fringes stay); it is taken out of each frame before that frame's sources are looked for
    first = []
    for frame in frames:
        skies = [_sky(p, scale, binning, params, find_sources=False) for p in frame.planes]
        level = float(np.median(np.concatenate([b[u] for b, u in skies])))
        first.append([(np.asarray(p.sci, np.float32) - b) / np.float32(level) for p, (b, _) in zip(frame.planes, skies)])
    rough = [np.median(np.stack([f[c] for f in first]), axis=0) for c in range(len(frames[0].planes))]
    del first
    prepared = []  # (frame, name, [(residual, usable, var)] per CCD, sky level)
    for frame, name in zip(frames, names):
        level0 = float(np.median(np.asarray(frame.planes[len(frame.planes) // 2].sci)))
        skies = [_sky(p, scale, binning, params, fringe_model=level0 * r) for p, r in zip(frame.planes, rough)]
        usable = np.concatenate([u.ravel() for _, u in skies])
        level = float(np.median(np.concatenate([b[u] for b, u in skies]))) if usable.any() else 0.0
        if usable.mean() < params.min_unmasked or level <= 0:
            log.warning(f"{name}: {usable.mean():.0%} of it is sky once its sources are masked (at least "
                        f"{params.min_unmasked:.0%} needed): left out of the fringe frame")
            continue
        backs = np.concatenate([b[u] for b, u in skies]) / level - 1.0
        structure = float(1.4826 * np.median(np.abs(backs - np.median(backs))))
        if structure > params.max_structure:
            log.warning(f"{name}: its sky varies by {structure:.1%} of its level on large scales (nebulosity; at most "
                        f"{params.max_structure:.1%} for a fringe frame): left out of the fringe frame")
            continue
        ccds = [_relative(p, back, use, level) for p, (back, use) in zip(frame.planes, skies)]
        prepared.append((frame, name, ccds, level))
    if len(prepared) < params.min_frames:
        raise GmosredError(f"{len(prepared)} of {len(frames)} frames usable for a fringe frame (at least "
                           f"{params.min_frames} needed)")
    n_dithered = _dithered(_offsets_arcsec([f for f, *_ in prepared]), params.min_dither)
    if n_dithered < params.min_frames:
        raise GmosredError(f"the {len(prepared)} usable frames sit at {n_dithered} pointing(s) {params.min_dither:g}\" "
                           f"apart: at least {params.min_frames} dithered pointings are needed for a fringe frame")
    # each frame's strength: its projection on the fringe frame without it (its own noise would otherwise pull
    # every strength towards the mean), filtered as the removal will filter it, over a projection on the whole
    # fringe frame; relative (median 1), so that whatever dilutes all the projections alike cancels
    strengths, errors = np.ones(len(prepared)), np.zeros(len(prepared))
    for step in range(3):
        planes = _combine_fringe(prepared, strengths, combine, frames[0])
        weights = np.asarray(_weights(prepared, strengths))
        filtered = [_filtered(p.sci, p.var, _has_fringe(p), params)[0] for p in planes]
        proj = np.zeros((len(prepared), len(planes), 4))  # numerator, denominator, error^2 x denominator^2, and the
        # denominator of a frame that is not an input (the whole fringe frame squared, its noise's power in it)
        for k, (_, _, ccds, level) in enumerate(prepared):
            own = (k, level, strengths[k], weights) if k < USED_BITS else None
            for c, ((resid, use, var), p, gf) in enumerate(zip(ccds, planes, filtered)):
                if own is None:
                    mine = gf
                else:
                    plain = _without_own(resid, var, p, own, params.clip)[0]
                    mine = _filtered(plain, p.var, _has_fringe(p) & np.isfinite(plain), params)[0]
                (num,), den, err, whole = _project(resid, use, [mine], gf, params.clip)
                proj[k, c] = num, den, err**2 * den**2, whole
        if step < 2:
            fitted = proj[:, :, 0].sum(1) / np.maximum(proj[:, :, 1].sum(1), 1e-300)
            norm = float(np.median(fitted))
            errors = np.sqrt(proj[:, :, 2].sum(1)) / np.maximum(proj[:, :, 1].sum(1), 1e-300) / norm
            strengths = fitted / norm  # on the scale of the fringe frame they were projected on
    # per CCD, what a projection gives for a frame of unit strength: the removal's scale is a projection over it
    for c, p in enumerate(planes):
        ratio = proj[:, c, 0] / np.maximum(proj[:, c, 1], 1e-300) / strengths
        dil = float(np.median(ratio))
        p.header["FRINGDIL"] = (round(dil, 6), "Projection of a frame of unit strength")
        spread = 1.4826 * float(np.median(np.abs(ratio - dil))) / dil if dil > 0 else 0.0
        p.header["FRINGDSP"] = (round(spread, 6), "Its robust scatter over the frames, relative")
        other = float(np.median(proj[:, c, 0] / np.maximum(proj[:, c, 3], 1e-300) / strengths))
        p.header["FRINGDLX"] = (round(other, 6), "The same for a frame not among the inputs")
    phu = frames[0].phu.copy()
    phu["OBJECT"] = "Fringe"
    phu["FRINGNUM"] = (len(prepared), "Frames combined into the fringe frame")
    table = fits.BinTableHDU.from_columns([
        fits.Column("FILENAME", "A80", array=[Path(n).name for _, n, _, _ in prepared]),
        fits.Column("SKY", "D", unit="electron", array=[level for *_, level in prepared]),
        fits.Column("STRENGTH", "D", array=strengths),
        fits.Column("STRERR", "D", array=errors),
        fits.Column("WEIGHT", "D", array=_weights(prepared, strengths))], name="FRINGEIN")
    return Frame(phu, planes, tables={"FRINGEIN": table})


def _relative(p: Plane, back, use, level: float):
    """(residual, usable, VAR) of a CCD plane relative to the sky level: (SCI - background) / level."""
    resid = (np.asarray(p.sci, np.float32) - back) / np.float32(level)
    var = np.asarray(p.var, np.float32) if p.var is not None else np.full(resid.shape, np.float32(level))
    return resid, use, var / np.float32(level * level)


def _weights(prepared, strengths) -> list[float]:
    """Each frame's weight in the fringe frame: its sky level x strength^2 (the inverse variance of its residual
    per unit strength, where the sky's photons dominate the noise)."""
    return [level * s * s for (_, _, _, level), s in zip(prepared, strengths)]


#: Inputs whose use per pixel the USED plane records (the bits of an int64 less its sign).
USED_BITS = 63


def _has_fringe(p: Plane) -> np.ndarray:
    """A fringe frame CCD's pixels with a value (at least one of its inputs was sky there)."""
    return np.isfinite(p.sci) if p.dq is None else (p.dq & (dqbits.FAIL | dqbits.NO_DATA)) == 0


def _combine_fringe(prepared, strengths, combine: comb.CombineParams, first: Frame) -> list[Plane]:
    """Per CCD, the frames' residuals divided by their strengths, combined; USED records which frames were sky at
    each pixel."""
    planes = []
    weights = _weights(prepared, strengths)
    for c, p0 in enumerate(first.planes):
        def provider(ccds, s, c=c):
            resid, use, var = ccds[c]

            def band(y0, y1, out):
                out[:] = resid[y0:y1] / np.float32(s)
                dq = np.where(use[y0:y1], 0, dqbits.NO_DATA).astype(np.uint16)
                return comb.Band(out, var[y0:y1] / np.float32(s * s), dq)
            return band
        res = comb.combine([provider(ccds, s) for (_, _, ccds, _), s in zip(prepared, strengths)], p0.sci.shape,
                           combine, weights=weights)
        sci = np.where(res.nused > 0, res.sci, np.float32(0.0))
        used = np.zeros(sci.shape, np.int64)
        for k, (_, _, ccds, _) in enumerate(prepared[:USED_BITS]):
            used |= ccds[c][1].astype(np.int64) << k
        planes.append(Plane(sci, p0.header.copy(), res.var, res.dq, extver=p0.extver, extra={"USED": used}))
    return planes


def _own_input(fringe: Frame, name: str):
    """(its row, sky level, strength, weights of all inputs) of the frame ``name`` (a file name) if it went into
    ``fringe`` (and its use is recorded), else None."""
    table = fringe.tables.get("FRINGEIN")
    if table is None or "USED" not in fringe.planes[0].extra:
        return None
    names = [str(n).strip() for n in table.data["FILENAME"]]
    if Path(name).name not in names or names.index(Path(name).name) >= USED_BITS:
        return None
    k = names.index(Path(name).name)
    return k, float(table.data["SKY"][k]), float(table.data["STRENGTH"][k]), np.asarray(table.data["WEIGHT"], float)


def _without_own(resid, var, fp: Plane, own, clip: float):
    """The fringe frame's CCD ``fp`` and its VAR with one input's contribution taken out (leave one out: its noise
    would otherwise be fitted as fringe, and the removal would take the fringe frame's noise for independent of the
    frame's). ``resid`` and ``var`` are that input's residual and VAR relative to its sky level, ``own`` its
    (index, sky level, strength, weights of all inputs); pixels made from it alone have no value (NaN). Where the
    combination clipped the input is judged from its residual (beyond ``clip`` sigma of the fringe frame)."""
    k, _, strength, weights = own
    x, v = np.asarray(resid, np.float64) / strength, np.asarray(var, np.float64) / strength**2
    F, VF, used = np.asarray(fp.sci, np.float64), np.asarray(fp.var, np.float64), fp.extra["USED"].astype(np.int64)
    W = np.zeros(F.shape)
    for j, w in enumerate(weights[:USED_BITS]):
        W += w * ((used >> j) & 1)
    w = weights[k]
    inside = (((used >> k) & 1) == 1) & (np.abs(x - F) <= clip * np.sqrt(v + VF))
    rest = np.where(inside, W - w, 1.0)
    alone = inside & (rest <= 1e-6 * w)
    rest[alone] = 1.0
    pattern = np.where(inside, (W * F - w * x) / rest, F)
    pvar = np.where(inside, np.maximum(W * W * VF - w * w * v, 0.0) / (rest * rest), VF)
    pattern[alone] = np.nan
    return pattern.astype(np.float32), pvar.astype(np.float32)


def wiener(pattern: np.ndarray, var: np.ndarray, has: np.ndarray, smooth: float = 0.02, white: float = 0.3):
    """(filtered pattern, its VAR, the part of the fringe kept) of one CCD of a fringe frame: the Wiener filter
    S / (S + N) per spatial frequency, S the pattern's power (the frame's power spectrum, smoothed over ``smooth``
    cycles per pixel, less the noise's) and N the white noise power, measured where a fringe has none (above
    ``white`` cycles per pixel) and at least that of its mean VAR. A fringe is smooth on the scale of its spacing, the
    noise of a fringe frame is not: the filter keeps every scale where the fringe stands above the noise and no
    other. What is white but not in VAR is the master flat's noise times the sky: the same in every frame, it does
    not average down in a fringe frame as its VAR supposes. The part of the fringe kept is what the filter leaves of
    the fringe's projection on itself over the pixels with a value, the noise's share taken out of both. The pixels
    with no value (``has`` False) stay without one (NaN)."""
    from scipy import ndimage

    if not has.any():
        return np.full(pattern.shape, np.nan, np.float32), np.zeros(pattern.shape, np.float32), 1.0
    f = np.where(has, pattern, 0.0).astype(np.float64)
    spec = np.fft.rfft2(f)
    power = (spec.real**2 + spec.imag**2) / f.size
    high = np.hypot(np.fft.fftfreq(f.shape[0])[:, None], np.fft.rfftfreq(f.shape[1])[None, :]) > white
    noise = float(np.mean(var[has])) * has.mean()  # the holes carry no noise
    if high.any():
        noise = max(noise, float(power[high].mean()))
    bins = (max(1.0, smooth * f.shape[0]), max(1.0, smooth * f.shape[1]))
    signal = np.maximum(ndimage.gaussian_filter(power, bins, mode=("wrap", "nearest")) - noise, 0.0)
    gain = signal / (signal + noise) if noise > 0 else np.ones(signal.shape)
    out = np.fft.irfft2(spec * gain, s=f.shape)
    # rfft columns other than the first and, for an even width, the last stand for two frequencies
    twice = np.full(gain.shape[1], 2.0)
    twice[0] = 1.0
    if f.shape[1] % 2 == 0:
        twice[-1] = 1.0
    kept = float((gain**2 * twice).sum() / (gain.shape[0] * twice.sum()))  # the filtered noise's share
    # over the pixels that have a value (the filter smears the holes' zeros into their edges), the filtered
    # pattern's product with the pattern and the pattern's square, less what the noise adds to each
    num = float((out * f)[has].sum()) - noise * float((gain * twice).sum())
    total = float((f * f)[has].sum()) - noise * float(twice.sum()) * gain.shape[0]
    part = min(num / total, 1.0) if total > 0 and num > 0 else 1.0
    return np.where(has, out, np.nan).astype(np.float32), np.asarray(var, np.float32) * np.float32(kept), part


def remove_fringe(frame: Frame, fringe: Frame, params: FringeParams = FringeParams(), name: str = "frame"):
    """The frame less its fitted fringe; returns (frame, {ccd: (scale, error)}, rms of the fringe before and the
    rms error of its removal (e-)). A frame that went into the fringe frame is fitted against the fringe frame
    without it."""
    if len(fringe.planes) != len(frame.planes):
        raise GmosredError(f"{name}: {len(frame.planes)} CCDs, its fringe frame {len(fringe.planes)}")
    scale, binning = _scale_and_binning(frame)
    own = _own_input(fringe, name)
    planes, scales, before, after = [], {}, [], []
    for p, fp in zip(frame.planes, fringe.planes):
        if p.sci.shape != fp.sci.shape:
            raise GmosredError(f"{name}: CCD {p.extver} is {p.sci.shape}, the fringe frame's {fp.sci.shape}")
        pattern = np.asarray(fp.sci, np.float32)
        good_fringe = _has_fringe(fp)
        back, use = _sky(p, scale, binning, params, find_sources=False)
        var = np.asarray(p.var, np.float32) if p.var is not None else None
        w0 = use & good_fringe if var is None else np.where(use & good_fringe, 1.0 / np.maximum(var, 1e-30), 0.0)
        s0, _ = _fit_scale(np.asarray(p.sci, np.float32) - back, w0, pattern, params.clip)
        back, use = _sky(p, scale, binning, params, fringe_model=np.float32(s0) * pattern)
        pvar = np.asarray(fp.var, np.float32) if fp.var is not None else np.zeros(pattern.shape, np.float32)
        if own is not None:
            resid, _, rvar = _relative(p, back, use, own[1])
            pattern, pvar = _without_own(resid, rvar, fp, own, params.clip)
        good_fringe &= np.isfinite(pattern)
        good = use & good_fringe
        sub, sub_var, att = _filtered(pattern, pvar, good_fringe, params)  # what is subtracted, per unit scale
        resid = np.asarray(p.sci, np.float32) - back
        if "FRINGDIL" in fp.header:  # a gmosred fringe frame: the scale from the frame's projection on it
            full = sub if own is None else _filtered(np.asarray(fp.sci, np.float32), fp.var, _has_fringe(fp), params)[0]
            (num,), den, err, _ = _project(resid, good, [sub], full, params.clip)
            dil = float(fp.header["FRINGDIL"] if own is not None else fp.header.get("FRINGDLX", fp.header["FRINGDIL"]))
            spread = float(fp.header.get("FRINGDSP", 0.0))
            s = num / den / dil if den > 0 and dil > 0 else 0.0
            # the error: the projection's noise, and how far the frames' projections scatter about FRINGDIL
            err = float(np.hypot(err / dil, s * spread)) if den > 0 and dil > 0 else float("inf")
        else:  # another's fringe frame: least squares, corrected for its noise
            w = np.where(good, 1.0 / np.maximum(var, 1e-30), 0.0) if var is not None else good.astype(float)
            s, err = _fit_scale(resid, w, np.nan_to_num(sub), params.clip, sub_var)
        scaled = s / att  # what the filter kept of the fringe, brought back to all of it
        fringe_e = np.where(good_fringe, np.float32(scaled) * np.nan_to_num(sub), np.float32(0.0))
        sci = np.asarray(p.sci, np.float32) - fringe_e
        out_var = None if var is None else var + np.where(good_fringe, np.float32(scaled**2) * sub_var, np.float32(0.0))
        noise = float(np.sqrt(np.mean(pvar[good]))) if good.any() else 0.0
        rms = float(np.sqrt(max(np.mean(pattern[good] ** 2) - noise**2, 0.0))) if good.any() else 0.0  # the signal's
        before.append(abs(s) * rms)
        # what may be left: the scale's error times the pattern, and the fringe frame's own noise as subtracted
        added = abs(scaled) * float(np.sqrt(np.mean(sub_var[good]))) if good.any() else 0.0
        after.append(float(np.hypot(err * rms, added)) if np.isfinite(err) else abs(s) * rms)
        hdr = p.header.copy()
        hdr["FRINGSCL"] = (round(s, 6), "[electron] Fringe frame scale subtracted")
        hdr["FRINGERR"] = (round(err, 6), "[electron] Error of FRINGSCL")
        hdr["FRINGUNC"] = (round(float(1 - good_fringe.mean()), 5), "Fraction of pixels left uncorrected")
        scales[p.extver] = (s, err)
        planes.append(Plane(sci.astype(np.float32), hdr, out_var, p.dq, extver=p.extver))
    return Frame(frame.phu.copy(), planes, tables=dict(frame.tables)), scales, float(np.sqrt(np.mean(np.square(before)))), \
        float(np.sqrt(np.mean(np.square(after))))


# ------------------------------------------------------------------ the file steps
def make_fringe_file(paths, out, params: FringeParams = FringeParams(),
                     combine: comb.CombineParams = FRINGE_COMBINE) -> Path:
    """``MCfringe_<filter>.fits`` from reduced frames (rg) of one setup and filter."""
    started = timestamp()
    frames, names = [], []
    for path in paths:
        f = read_processed(path)
        prov.refuse_twice(f.phu, "GIFRINGE", path)  # a fringe frame is not made from fringe frames
        if "GIREDUCE" not in f.phu:
            raise GmosredError(f"{path}: not a reduced frame (rg): a fringe frame is made from reduced frames")
        if "GIRMFRIN" in f.phu:
            raise GmosredError(f"{path}: already defringed: a fringe frame is made from frames with their fringes")
        frames.append(f)
        names.append(str(path))
    from ..obslog import match

    for f, name in zip(frames[1:], names[1:]):
        match.check("fringe", frames[0], Path(names[0]).name, f, Path(name).name)
    result = make_fringe_frame(frames, params, combine, names)
    prov.record(result.phu, result.tables, "fringe", "GIFRINGE", inputs=list(paths), started=started,
                params={"fringe": params, "fringe_combine": combine})
    return write(result, out)


def remove_fringe_file(path, outdir, fringe, params: FringeParams = FringeParams(), missing: str = "") -> Path:
    """``<outdir>/f<rg...>.fits``: a reduced frame less its fitted fringe. Without a fringe frame (``fringe`` None,
    ``missing`` saying why) the frame is written unchanged with a SKIPPED note, so that the later steps go on."""
    from ..obslog import match

    started = timestamp()
    path = Path(path)
    frame = read_processed(path)
    prov.refuse_twice(frame.phu, "GIRMFRIN", path)
    if "GIREDUCE" not in frame.phu:
        raise GmosredError(f"{path}: not a reduced frame (rg): remove the fringe before the mosaic")
    out = Path(outdir) / f"{params.prefix}{stem(path)}.fits"
    if fringe is None:
        why = f"no fringe frame ({missing or 'none given'}): the fringe is left in"
        log.warning(f"{path.name}: {why}")
        result = Frame(frame.phu.copy(), frame.planes, tables=dict(frame.tables))
        prov.skip(result.phu, "rmfringe", why)
        return write(result, out)
    fringe_frame = read_processed(fringe)
    if "GIFRINGE" not in fringe_frame.phu:
        raise GmosredError(f"{fringe}: not a fringe frame (gmosred fringe makes one)")
    match.check("fringe", fringe_frame, Path(fringe).name, frame, path.name)
    result, scales, amp, res = remove_fringe(frame, fringe_frame, params, name=str(path))
    if not res <= params.max_residual * amp:
        why = (f"fringe of {amp:.1f} e- rms, which {Path(fringe).name} would remove only to within {res:.1f} e- "
               f"(more than [fringe] max_residual {params.max_residual:g} of it): the fringe is left in")
        log.warning(f"{path.name}: {why}")
        kept = Frame(frame.phu.copy(), frame.planes, tables=dict(frame.tables))
        kept.phu["FRINGAMP"] = (round(amp, 3), "[electron] rms fringe in the sky (not removed)")
        kept.phu["FRINGRES"] = (round(res, 3), "[electron] rms error a removal would have")
        prov.skip(kept.phu, "rmfringe", why)
        return write(kept, out)
    result.phu["FRINGAMP"] = (round(amp, 3), "[electron] rms fringe in the sky before removal")
    result.phu["FRINGRES"] = (round(res, 3), "[electron] rms error of the removal")
    log.info(f"{path.name}: fringe of {amp:.2f} e- rms removed, to within {res:.2f} e- (scales "
             + ", ".join(f"{s:.1f}" for s, _ in scales.values()) + " e-)")
    prov.record(result.phu, result.tables, "rmfringe", "GIRMFRIN", inputs=[path], started=started,
                calibrations={"fringe": fringe}, params={"fringe": params}, carried=[frame])
    return write(result, out)
