"""Make a simulated GMOS-S observing run: raw files in ``OUTDIR/raw``, the truth in ``OUTDIR/truth``."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import instruments
from ..frame.model import write_atomic
from ..progress import progress
from . import model, raw, truth
from . import plan as obsplan

_STATE: dict = {}  # shared with forked workers: the static truth


def simulate_run(outdir, size: str = "small", seed: int = 1, jobs: int = 1, show_progress: bool | None = None,
                 detector: str = model.DEFAULT_CAMERA) -> Path:
    """Simulate the M8 run. ``size``: 'small' (4x4), 'full' (2x2) or 'program' (2x2, real program size);
    ``detector``: the detector set observed with (``model.cameras()``: gmos-s-eev, the real program's, ...).

    Deterministic for a given seed (and independent of ``jobs``). Returns ``outdir``.
    """
    if size not in obsplan.SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(obsplan.SIZES)}")
    cam = model.camera(detector)
    outdir = Path(outdir)
    rawdir, truthdir = outdir / "raw", outdir / "truth"
    rawdir.mkdir(parents=True, exist_ok=True)
    spec = obsplan.SIZES[size]
    layout = model.Layout(spec.binning, cam.name)
    rng = np.random.default_rng(seed)
    exposures = obsplan.observing_plan(size, np.random.default_rng([seed, 1]), cam.site, cam.years_after_2006)
    stars = model.star_catalog(np.random.default_rng([seed, 2]))
    gaia = model.gaia_catalog(stars, np.random.default_rng([seed, 3]))
    ps1 = model.ps1_catalog(stars, np.random.default_rng([seed, 6]))
    nebula, nebula_wcs = model.nebula_maps(np.random.default_rng([seed, 4]))
    det = model.detector_truth(layout, np.random.default_rng([seed, 5]))

    # header WCS errors: a run-wide rotation, a few arcsec per acquisition, 0.1" jitter per dither
    pa_error = float(rng.choice([-1, 1]) * rng.uniform(0.07, 0.13))
    acquisition = {name: rng.normal(0.0, 2.5, 2) for name in obsplan.POINTINGS}
    records = []
    for k, exp in enumerate(exposures):
        rec = exp.as_dict()
        rec.update(rec.pop("extra"))
        rec.update(_frame_parameters(exp, layout, np.random.default_rng([seed, 100, k]), pa_error, acquisition))
        rec["seed"] = [seed, 1000, k]
        records.append(rec)

    run = {
        "program": obsplan.program(cam.site, cam.years_after_2006), "size": size, "seed": seed,
        "binning": spec.binning, "camera": cam.name, "detid": cam.detid,
        "pixel_scale": layout.pixel_scale, "zero_points": model.zero_points(cam), "extinction": model.EXTINCTION,
        "sky_mag": model.SKY_MAG, "moffat_beta": model.MOFFAT_BETA, "overscan_leak": model.OVERSCAN_LEAK,
        "pa_error_deg": pa_error, "colour_term": model.COLOUR_TERM, "narrowband_slope": model.NARROWBAND_SLOPE,
        "distortion_arcsec_at_200": model.DISTORTION_ARCSEC_AT_200, "star_epoch": model.GAIA_EPOCH, "amplifiers": [a.name for a in cam.amps],
        "amplifier_ccd": [a.ccd for a in cam.amps], "frames": records,
        "notes": ("Star fluxes: e- = t 10**(-0.4 (m - ZP_CCD2 + k (X - 1))), m the GMOS-system magnitude (catalogue "
                  "r, i + colour_term x (r - i)) at the star's position moved to the frame's epoch; the flat-field response per CCD "
                  "carries the CCD-to-CCD sensitivity (from the per-CCD zero points) and is normalised to a median "
                  "of 1 over CCD2's illuminated central region. Fringes are additive in flat-fielded electrons."),
    }
    truth.save_static(truthdir, run, stars, gaia, ps1, nebula, nebula_wcs, det)
    state = truth.Truth(truthdir, run, stars, gaia, ps1, nebula, nebula_wcs, det)

    _STATE["truth"], _STATE["rawdir"] = state, rawdir
    results = []
    bar = progress(total=len(records), desc="simulate", enabled=show_progress)
    if jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            for res in pool.map(_make_frame, range(len(records)), chunksize=2):
                results.append(res)
                bar.update()
    else:
        for k in range(len(records)):
            results.append(_make_frame(k))
            bar.update()
    bar.close()
    _STATE.clear()
    for rec, res in zip(records, results):
        rec.update(res)
    truth.save_run(truthdir, run)
    return outdir


def _frame_parameters(exp: obsplan.Exposure, layout, rng, pa_error: float, acquisition) -> dict:
    kind = "bias" if exp.obstype == "BIAS" else ("twilight" if exp.object == "Twilight" else "science")
    start = datetime.fromisoformat(exp.start)
    amps = [instruments.amplifier(a.name, start.date(), model.READ_SPEED, model.GAIN_SETTING) for a in layout.camera.amps]
    p = {
        "kind": kind, "band": exp.band,
        "darktime": 0.0 if kind == "bias" else exp.exptime + 37.0,
        "gain": [a.gain for a in amps], "read_noise_e": [a.read_noise for a in amps],
        "bias_level_adu": [a.bias_level + float(rng.normal(0.0, 2.0)) for a in amps],
        "fwhm_arcsec": float(rng.uniform(0.55, 1.0)), "sky_e": 0.0, "fringe_e": 0.0,
        "header_pa": obsplan.PA, "true_pa": obsplan.PA - pa_error,
        "header_crval": [exp.ra, exp.dec], "true_crval": [exp.ra, exp.dec], "pointing_error_arcsec": [0.0, 0.0],
    }
    if kind == "science":
        err = acquisition[exp.object] + rng.normal(0.0, 0.08, 2)
        p["pointing_error_arcsec"] = [float(e) for e in err]
        p["true_crval"] = list(obsplan.offset_position(exp.ra, exp.dec, err[0], err[1]))
        p["sky_e"] = truth.sky_electrons(exp.band, exp.airmass, exp.exptime, layout.pixel_scale, rng.uniform(0.9, 1.3),
                                         layout.camera)
        if exp.band in model.FRINGE_BANDS:
            p["fringe_e"] = float(rng.uniform(0.012, 0.02) * layout.camera.fringe_scale * p["sky_e"])
    return p


def _make_frame(k: int) -> dict:
    """Render, add noise to and write raw frame ``k``; returns what the truth records of it."""
    state: truth.Truth = _STATE["truth"]
    rec = state.run["frames"][k]
    layout = state.layout
    det = state.detector
    rng = np.random.default_rng(rec["seed"])
    ny, nx = layout.shape
    extras: dict[str, np.ndarray] = {}
    if rec["kind"] == "twilight":
        extras.update(_twilight_stars(rng, layout, rec))
    wcs_header = model.true_wcs(layout, tuple(rec["header_crval"]), rec["header_pa"])
    fields = set(obsplan.Exposure.__dataclass_fields__) - {"extra"}
    phu = raw.primary_header(obsplan.Exposure(**{f: rec[f] for f in fields}), layout, rec["header_pa"])
    start = datetime.fromisoformat(rec["start"])
    mjd = (start - datetime(1858, 11, 17)).total_seconds() / 86400.0
    hdus = [fits.PrimaryHDU(header=phu)]
    n_sat, n_cr = 0, 0
    cam = layout.camera
    number = 0
    for ccd in (1, 2, 3):
        expected = truth.frame_electrons(state, rec, ccd, extras)
        electrons = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
        if rec["kind"] != "bias":
            cy, cx, ce = raw.cosmic_rays(rng, (ny, nx), rec["darktime"], layout.binning)
            np.add.at(electrons, (cy, cx), ce)
            extras[f"cr{ccd}_y"], extras[f"cr{ccd}_x"], extras[f"cr{ccd}_e"] = cy, cx, ce
            n_cr += len(cy)
        saturated = np.zeros((ny, nx), bool)
        for amp in (a for a in cam.amps if a.ccd == ccd):
            number += 1
            cols = layout.amp_columns(amp)
            row = model.row_term(rng, ny)
            extras[f"row{number}"] = row
            table = instruments.amplifier(amp.name, start.date(), model.READ_SPEED, model.GAIN_SETTING)
            pixels, saturated[:, cols] = raw.raw_pixels(
                electrons[:, cols], amp, table, rec["bias_level_adu"][number - 1], row, det.bias2d[ccd - 1][:, cols],
                instruments.full_well(cam.detector, amp.name), rng)
            x_offset = (0 if amp.overscan_right else model.OVERSCAN_COLUMNS) - cols.start
            cards = model.ccd_wcs_cards(layout, wcs_header, ccd, x_offset)
            hdus.append(fits.ImageHDU(pixels, raw.extension_header(amp, number, layout, cards, mjd, table)))
        sy, sx = np.nonzero(saturated)
        extras[f"sat{ccd}_y"], extras[f"sat{ccd}_x"] = sy.astype(np.int32), sx.astype(np.int32)
        n_sat += len(sy)
    write_atomic(fits.HDUList(hdus), _STATE["rawdir"] / f"{rec['file']}.fits")
    np.savez_compressed(state.root / "frames" / f"{rec['file']}.npz", **extras)
    return {"n_saturated": n_sat, "n_cosmic_pixels": n_cr}


def _twilight_stars(rng, layout, rec) -> dict[str, np.ndarray]:
    """A sparse random star field for a twilight flat (faint against the bright sky)."""
    ny, nx = layout.shape
    n = 60
    flux = rec["twilight_level_e"] * 10 ** rng.uniform(0.0, 2.0, n)
    return {"tw_ccd": rng.integers(1, 4, n), "tw_x": rng.uniform(0, nx, n), "tw_y": rng.uniform(0, ny, n),
            "tw_flux": flux}
