"""Master twilight flat per filter (giflat) -> MCflat_<filter>.fits.

Each flat is overscan-corrected, trimmed and bias-subtracted; its level is the clipped mean of
CCD2's central region ([100:1800,100:4500] unbinned, illuminated pixels); flats that are saturated
or underexposed are left out. The others are scaled to the first one's level and combined with
weights proportional to their level (the inverse variance of a scaled flat), rejecting outliers
(stars, cosmic rays) against each flat's own noise model (read noise, gain, Poisson: ``varclip``
about the median), so that good photons are kept: the master reaches the photon limit of its
inputs. One level from CCD2 (clipped median of the central region) normalises all CCDs (the cookbook's giflat: CCD-to-CCD sensitivity
stays in the flat), or each CCD its own (``normalize="ccd"``).

Unilluminated pixels are set to 1 and flagged DQ 64 (so that science frames are never divided by
nothing): those of the illumination mask (and kept bottom rows), and, as a safety net and where no mask
is known, those whose flat is consistent with no light: below ``unlit_below`` of their CCD's level, or
within 3 sigma (their VAR) of zero. Each CCD's header counts them: NUNLITM (mask only), NUNLITD (data
only), NUNLITB (both).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..engines import combine as comb
from ..frame import dq as dqbits
from ..errors import GmosredError
from ..params import checked, param
from ..frame import provenance as prov
from ..obslog import match
from ..frame.model import Frame, Plane, read_processed, timestamp, write
from ..frame.sections import Section
from . import masks
from . import overscan as ovs
from .bias import combine_keywords, noise_var
from .inputs import close_all, open_inputs

log = logging.getLogger("gmosred")
#: CCD2's central region for flat levels (unbinned, 0-based end-exclusive: [100:1800,100:4500] 1-based).
CENTRAL = Section(99, 1800, 99, 4500)
ADC_MAX = 65535
#: Raw counts are integers; rebuilt as (band + overscan level) in float32 they are compared with half a count to spare.
SATURATED_AT = ADC_MAX - 0.5


@checked
class FlatParams:
    """giflat's choices; the flats' combine settings are their own section (``flat_combine``)."""

    normalize: str = param("ccd2", "one CCD2 level for all CCDs (the cookbook's) or each CCD its own",
                           choices=("ccd2", "ccd"))
    min_level: float = param(1000.0, "ADU: a flat whose level is below is underexposed", low=0)
    max_saturated: float = param(0.005, "fraction of CCD2's central pixels at the ADC limit above which a flat "
                                        "is saturated", low=0, high=1)
    weight: bool = param(True, "weight the flats by their level")
    unlit_below: float = param(0.1, "a pixel whose flat is below this fraction of its CCD's level (or within "
                                    "3 sigma of zero) gets no light: flat 1, DQ 64", low=0, high=1)


#: giflat's combine: average with variance clipping about a trimmed centre, VAR from the inputs'.
FLAT_COMBINE = comb.CombineParams(method="average", reject="varclip", center="trimmed", var="propagate",
                                  lsigma=3.0, hsigma=3.0)


def central_region(header, binning, shape) -> tuple[slice, slice]:
    """CCD2's central region in a plane's pixels (intersected with the plane's CCDSEC)."""
    ccdsec = Section.parse(header["CCDSEC"])
    bx, by = binning
    x1 = max(CENTRAL.x1, ccdsec.x1) - ccdsec.x1
    x2 = min(CENTRAL.x2, ccdsec.x2) - ccdsec.x1
    y1 = max(CENTRAL.y1, ccdsec.y1) - ccdsec.y1
    y2 = min(CENTRAL.y2, ccdsec.y2) - ccdsec.y1
    ys = slice(max(-(-y1 // by), 0), min(y2 // by, shape[0]))
    xs = slice(max(-(-x1 // bx), 0), min(x2 // bx, shape[1]))
    if ys.stop <= ys.start or xs.stop <= xs.start:
        raise GmosredError("the frame does not cover CCD2's central region: cannot scale or normalise flats")
    return ys, xs


#: values the clipping statistics are taken from, at most (an even subsample of larger sets)
CLIP_SAMPLE = 100_000


def clipped_mean(values: np.ndarray, nsigma: float = 3.0, median: bool = False) -> float:
    """Mean (or median) of the values within ``nsigma`` of the median (stars, cosmics, bad pixels left
    out), sigma from the median absolute deviation, both iterated until no more values go. The
    median and sigma come from an even subsample of at most CLIP_SAMPLE values (their errors are then
    below 1% of sigma); the mean is of every value within the limits."""
    v = np.ravel(values)
    v = v[np.isfinite(v)]
    s = v[::max(1, v.size // CLIP_SAMPLE)]
    for _ in range(5):
        med = np.median(s)
        limit = nsigma * max(1.4826 * np.median(np.abs(s - med)), 1e-6)
        keep = np.abs(s - med) < limit
        if keep.all():
            break
        s = s[keep]
    kept = v[np.abs(v - med) < limit]
    return float(np.median(kept) if median else kept.mean())


def load_calibration(path, kind: str) -> Frame:
    try:
        return read_processed(path)
    except GmosredError as e:
        raise GmosredError(f"{kind} {e}") from None


def check_calibration(cal: Frame, cal_path, reader, kind: str) -> None:
    """A calibration against a raw frame: the matching criteria of its kind (``obslog.match``), then
    that it covers the frame's CCDs and sections and that both had the overscan treated alike."""
    match.check(kind, cal, cal_path, reader.raw, reader.path)
    problems = []
    versions = {p.extver for p in cal.planes}
    for ccd in reader.ccds:
        if ccd not in versions:
            problems.append(f"no CCD{ccd}")
            continue
        p = cal.plane(ccd)
        hdr = reader.header(ccd)
        if p.header.get("CCDSEC") != hdr["CCDSEC"] or p.sci.shape != reader.shape(ccd):
            problems.append(f"CCD{ccd} section {p.header.get('CCDSEC')} vs {hdr['CCDSEC']} (ROI)")
            break
    mode = reader.planes[reader.ccds[0]][0].overscan.mode
    cal_mode = str(cal.phu.get("OVSMODE", "")).strip()
    if cal_mode and (cal_mode == "none") != (mode == "none"):
        state = {True: "not subtracted", False: "subtracted"}
        problems.append(f"overscan {state[cal_mode == 'none']} in the {kind} but {state[mode == 'none']} in the frame")
    cal_rows = str(cal.phu.get("BOTROWS", "none")).strip()
    if cal_rows != reader.botrows:
        problems.insert(0, f"bottom rows {cal_rows} in the {kind} but {reader.botrows} in the frame "
                           "(the [overscan] bottom_rows setting)")
    if problems:
        raise GmosredError(f"{kind} {cal_path} does not match {reader.path}: {'; '.join(problems)}")


def make_master_flat(paths, out, bias=None, params: FlatParams = FlatParams(), *,
                     overscan: ovs.OverscanParams = ovs.OverscanParams(),
                     combine: comb.CombineParams = FLAT_COMBINE, tmpdir=None) -> Path:
    """Combine raw twilight flats of one filter into a normalised master flat; returns the output path."""
    out = Path(out)
    started = timestamp()
    bias_frame = load_calibration(bias, "bias") if bias else None
    readers = open_inputs(paths, overscan, what="master flat", tmpdir=tmpdir or out.parent)
    try:
        filters = {r.raw.filter for r in readers}
        if len(filters) > 1:
            common = max(filters, key=lambda f: sum(r.raw.filter == f for r in readers))
            for r in [r for r in readers if r.raw.filter != common]:
                log.warning(f"{r.path}: filter {r.raw.filter} is not {common}: left out of the master flat")
                r.close()
            readers = [r for r in readers if r.raw.filter == common]
        first = readers[0]
        if bias_frame is not None:
            check_calibration(bias_frame, bias, first, "bias")
        levels, good = [], []
        for r in readers:
            level, reason = _flat_level(r, bias_frame, params)
            if reason:
                log.warning(f"{r.path}: {reason}: left out of the master flat")
                r.close()
                continue
            levels.append(level)
            good.append(r)
        if not good:
            raise GmosredError(f"no usable flats for {out.name}")
        readers = good
        first = readers[0]
        scales = [levels[0] / lv for lv in levels]
        weights = levels if params.weight else None
        planes = []
        for ccd in first.ccds:
            bplane = bias_frame.plane(ccd) if bias_frame is not None else None

            def provider(r, ccd=ccd, bplane=bplane):
                nvar = noise_var(r, ccd)
                gain = r.amp_map(ccd, "gain")

                def band(y0, y1, out):  # in electrons: the flat keeps the CCDs' (and amplifiers') sensitivities
                    c = r.band(ccd, y0, y1, out)
                    var = nvar + np.maximum(c, 0) / gain
                    if bplane is not None:
                        c -= bplane.sci[y0:y1]
                        if bplane.var is not None:
                            var += bplane.var[y0:y1]
                    dq = bplane.dq[y0:y1] if bplane is not None and bplane.dq is not None else None
                    c *= gain
                    var *= gain * gain
                    return comb.Band(c, var, dq)
                return band
            res = comb.combine([provider(r) for r in readers], first.shape(ccd), combine,
                               scales=scales, weights=weights)
            hdr = first.header(ccd)
            planes.append(Plane(res.sci, hdr, res.var, res.dq, extver=ccd))
        norm = _normalise(planes, first, params)
        phu = combine_keywords(first.raw.phu.copy(), readers, combine, overscan)
        phu["OBJECT"] = "Twilight"
        phu["GIFLNORM"] = (round(norm, 4), "Normalisation level (e-), CCD2 central region")
        phu["FLATMODE"] = (params.normalize, "ccd2: one level for all CCDs; ccd: each its own")
        counts = {k: sum(int(p.header[k]) for p in planes) for k in ("NUNLITM", "NUNLITD", "NUNLITB")}
        log.info(f"{out.name}: {sum(counts.values())} unlit pixels flagged ({counts['NUNLITB']} by mask and flat, "
                 f"{counts['NUNLITM']} by the mask only, {counts['NUNLITD']} by the flat only)")
        for k, (r, lv) in enumerate(zip(readers, levels), start=1):
            phu[f"FLTLEV{k:02d}"] = (round(lv, 2), f"Level (e-) of {r.path.name}")
        result = Frame(phu, planes)
        prov.record(phu, result.tables, "flat", "GIFLAT", inputs=[r.path for r in readers], started=started,
                    calibrations={"bias": bias} if bias else {},
                    params={"overscan": overscan, "flat": params, "combine": combine})
        return write(result, out)
    finally:
        close_all(readers)


def _flat_level(r, bias_frame, params: FlatParams) -> tuple[float, str | None]:
    """Level (electrons) of a flat in CCD2's central region, or a reason to leave it out."""
    if 2 not in r.ccds:
        return 0.0, "no CCD2"
    hdr = r.header(2)
    ys, xs = central_region(hdr, r.raw.binning, r.shape(2))
    c = r.band(2, ys.start, ys.stop)[:, xs]
    raw = c + r.levels(2, ys.start, ys.stop)[:, xs]
    if bias_frame is not None:
        c -= bias_frame.plane(2).sci[ys, xs]
    gain = np.broadcast_to(r.amp_map(2, "gain")[:, xs], c.shape)
    lit = _lit(r, 2, hdr)
    if lit is not None:
        lit = lit[ys, xs]
        c, raw, gain = c[lit], raw[lit], gain[lit]
    saturated = float(np.mean(raw >= SATURATED_AT))
    if saturated > params.max_saturated:
        return 0.0, f"saturated ({100 * saturated:.1f}% of CCD2's central pixels at the ADC limit)"
    adu = clipped_mean(c)
    if adu < params.min_level:
        return adu, f"underexposed (level {adu:.0f} ADU < {params.min_level:.0f})"
    if np.all(gain == gain.flat[0]):  # one amplifier: the clipping does not change with the scale
        return adu * float(gain.flat[0]), None
    return clipped_mean(c * gain), None


def _lit(reader, ccd, hdr):
    unlit = masks.unilluminated(reader.raw, ccd, Section.parse(hdr["CCDSEC"]))
    return None if unlit is None else ~unlit


#: A flat within this many sigma of zero is consistent with no light.
UNLIT_NSIGMA = 3.0


def _flag_unlit(p: Plane, mask_unlit: np.ndarray | None, ccd2_level: float, params: FlatParams) -> np.ndarray:
    """Flag the plane's unilluminated pixels (DQ 64) from the mask and from the data; record the counts."""
    sci = p.sci
    above = sci > params.unlit_below * ccd2_level  # the CCD's level, from what is clearly lit
    usable = above & ((p.dq & dqbits.FAIL) == 0)
    level = clipped_mean(sci[usable], median=True) if usable.any() else ccd2_level
    noise = UNLIT_NSIGMA * np.sqrt(np.maximum(p.var, 0)) if p.var is not None else 0.0
    data = (sci < params.unlit_below * level) | (sci <= noise)
    data &= (p.dq & dqbits.NO_DATA) == 0
    mask = np.zeros_like(data) if mask_unlit is None else mask_unlit
    p.header["NUNLITM"] = (int(np.count_nonzero(mask & ~data)), "Unlit pixels from the mask only")
    p.header["NUNLITD"] = (int(np.count_nonzero(data & ~mask)), f"Unlit from the flat only (<{params.unlit_below:g} level)")
    p.header["NUNLITB"] = (int(np.count_nonzero(data & mask)), "Unlit pixels from mask and flat")
    unlit = mask | data
    p.dq |= np.where(unlit, dqbits.UNILLUMINATED, 0).astype(np.uint16)
    return unlit


def _normalise(planes: list[Plane], reader, params: FlatParams) -> float:
    """Divide by CCD2's central level (or each CCD by its own); unilluminated pixels -> 1, DQ 64."""
    p2 = next((p for p in planes if p.extver == 2), None)
    if p2 is None:
        raise GmosredError("flats without CCD2 cannot be normalised")
    lits = {p.extver: _lit(reader, p.extver, p.header) for p in planes}
    ys, xs = central_region(p2.header, reader.raw.binning, p2.sci.shape)
    good2 = (p2.dq & dqbits.FAIL) == 0
    if lits[2] is not None:
        good2 &= lits[2]
    rough = clipped_mean(p2.sci[ys, xs][good2[ys, xs]], median=True)
    for p in planes:
        _flag_unlit(p, None if lits[p.extver] is None else ~lits[p.extver], rough, params)
    levels = {}
    for p in planes:
        good = (p.dq & (dqbits.FAIL | dqbits.UNILLUMINATED)) == 0
        if p.extver == 2:
            levels[2] = clipped_mean(p.sci[ys, xs][good[ys, xs]], median=True)
        levels.setdefault(p.extver, clipped_mean(p.sci[good], median=True) if params.normalize == "ccd" else None)
    for p in planes:
        norm = levels[2] if params.normalize == "ccd2" or p.extver == 2 else levels[p.extver]
        p.sci /= np.float32(norm)
        p.var /= np.float32(norm * norm)
        unlit = (p.dq & dqbits.UNILLUMINATED) != 0
        p.sci[unlit] = 1.0
        p.var[unlit] = 0.0
        p.header["FLATNORM"] = (round(float(norm), 4), "Level divided out (e-)")
    return float(levels[2])
