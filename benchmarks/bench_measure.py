"""The measure step against SExtractor + SCAMP on the same full-size mosaics, one run: accuracy and time.

    python benchmarks/bench_measure.py [--workdir DIR] [--frames N]

Inputs: 2x2 mosaics (mrg) of the simulated run's M8-1 frames, one per filter (i, r, HaC, Ha), made here with
gmosred's own reduce and mosaic. Both sides get the same catalogues: Gaia (the simulated sky's, with proper
motions) and Pan-STARRS1.

* gmosred: ``measure_frame`` (detection, matching, TAN-SIP fit with the catalogue moved to the frame's epoch,
  zero point with colour term), timed without the file I/O, and ``measure_file`` with it.
* SExtractor (``source-extractor``): windowed centroids and aperture fluxes, VAR as the weight map; SCAMP
  (``scamp``) fitted jointly on all frames with DISTORT_DEGREES 3, fed the Gaia catalogue moved to the
  frames' epoch by hand (what a careful SCAMP user does); its zero point is the median of catalogue minus
  SExtractor's aperture magnitudes (SExtractor and SCAMP do not fit colour terms here).

Accuracy against the truth: rms of the bright clean stars' positions through each fitted WCS at each
tool's own centroids, next to the floor (the true WCS at the same centroids), and |ZP - truth|.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from common import full_run


def mosaics(run, truth, work: Path, bands) -> list:
    """(record, mosaic path) of the first M8-1 frame in each band, reduced and mosaicked by gmosred."""
    from gmosred.calibrate.bias import make_master_bias
    from gmosred.calibrate.flat import make_master_flat
    from gmosred.calibrate.reduce import reduce_frame
    from gmosred.mosaic import mosaic_file

    raw = lambda r: str(run / "raw" / f"{r['file']}.fits")  # noqa: E731
    bias = work / "MCbias.fits"
    if not bias.exists():
        make_master_bias([raw(r) for r in truth.frames if r["kind"] == "bias"], bias)
    out = []
    for band in bands:
        rec = next(r for r in truth.frames if r["kind"] == "science" and r["band"] == band and r["object"] == "M8-1")
        m = work / f"mrg{rec['file']}.fits"
        if not m.exists():
            flat = work / f"MCflat_{band}.fits"
            if not flat.exists():
                make_master_flat([raw(r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == band], flat,
                                 bias=bias)
            mosaic_file(reduce_frame(raw(rec), work, bias=bias, flat=flat), work)
        out.append((rec, m))
    return out


def truth_positions(truth, rec):
    from gmosred.simulate import model

    return model.positions_at(truth.stars, model.julian_epoch(rec["start"]))


def rms_against_truth(truth, rec, wcs, x, y, true_wcs):
    """rms (mas) of (x, y) (1-based) through ``wcs`` and through the true WCS, against the nearest true star."""
    from scipy.spatial import cKDTree

    tra, tdec = truth_positions(truth, rec)
    cosd = np.cos(np.radians(np.median(tdec)))
    tree = cKDTree(np.c_[tra * cosd, tdec])
    rt, dt = true_wcs.all_pix2world(x, y, 1)
    d, k = tree.query(np.c_[rt * cosd, dt])
    ok = d * 3.6e6 < 150
    out = []
    for w in (wcs, true_wcs):
        r, dd = w.all_pix2world(x[ok], y[ok], 1)
        out.append(float(np.sqrt(np.mean(((r - tra[k[ok]]) * cosd) ** 2 + (dd - tdec[k[ok]]) ** 2)) * 3.6e6))
    return out[0], out[1], int(ok.sum())


def write_ldac_refcat(cat, epoch: float, path: Path) -> None:
    """The Gaia catalogue moved to ``epoch`` as a FITS-LDAC reference catalogue for SCAMP."""
    from astropy.io import fits

    cards = fits.Header()
    cards["EPOCH"] = epoch
    head = fits.BinTableHDU.from_columns(
        [fits.Column("Field Header Card", f"{len(cards.tostring())}A", array=np.array([cards.tostring()]))],
        name="LDAC_IMHEAD")
    n = len(cat)
    cols = [fits.Column("X_WORLD", "1D", "deg", array=np.asarray(cat["ra"])),
            fits.Column("Y_WORLD", "1D", "deg", array=np.asarray(cat["dec"])),
            fits.Column("ERRA_WORLD", "1E", "deg", array=np.asarray(cat["ra_error"]) / 3.6e6),
            fits.Column("ERRB_WORLD", "1E", "deg", array=np.asarray(cat["dec_error"]) / 3.6e6),
            fits.Column("MAG", "1E", "mag", array=np.nan_to_num(np.asarray(cat["G"]), nan=25.0)),
            fits.Column("MAGERR", "1E", "mag", array=np.full(n, 0.01, np.float32)),
            fits.Column("OBSDATE", "1D", "yr", array=np.full(n, epoch))]
    objects = fits.BinTableHDU.from_columns(cols, name="LDAC_OBJECTS")
    fits.HDUList([fits.PrimaryHDU(), head, objects]).writeto(path, overwrite=True)


SEX_PARAMS = ["NUMBER", "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE", "ERRBWIN_IMAGE", "ERRTHETAWIN_IMAGE",
              "FLUX_APER", "FLUXERR_APER", "FLUX_AUTO", "FLUXERR_AUTO", "FLUX_RADIUS", "FWHM_IMAGE", "FLAGS",
              "ELONGATION", "MAG_AUTO", "MAGERR_AUTO", "SNR_WIN", "XWIN_WORLD", "YWIN_WORLD", "ERRAWIN_WORLD",
              "ERRBWIN_WORLD", "ERRTHETAWIN_J2000", "FLAGS_WEIGHT", "X_IMAGE", "Y_IMAGE"]


def sextractor(mosaic: Path, work: Path, fwhm_arcsec: float, scale: float, aperture_px: float):
    """SExtractor on the mosaic's SCI with its VAR as the weight map. Returns (catalogue path, seconds)."""
    from astropy.io import fits

    with fits.open(mosaic) as h:
        sci = work / f"{mosaic.stem}_sci.fits"
        var = work / f"{mosaic.stem}_var.fits"
        fits.PrimaryHDU(h["SCI"].data, h["SCI"].header).writeto(sci, overwrite=True)
        v = np.where(h["DQ"].data & 0x59, 1e30, h["VAR"].data).astype(np.float32)
        fits.PrimaryHDU(v, h["SCI"].header).writeto(var, overwrite=True)
    (work / "default.param").write_text("\n".join(SEX_PARAMS) + "\n")
    (work / "default.conv").write_text("CONV NORM\n1 2 1\n2 4 2\n1 2 1\n")
    cat = work / f"{mosaic.stem}.ldac"
    cmd = ["source-extractor", str(sci), "-c", "/dev/null", "-CATALOG_NAME", str(cat), "-CATALOG_TYPE", "FITS_LDAC",
           "-PARAMETERS_NAME", str(work / "default.param"), "-FILTER_NAME", str(work / "default.conv"),
           "-WEIGHT_TYPE", "MAP_VAR", "-WEIGHT_IMAGE", str(var), "-GAIN", "1.0", "-PIXEL_SCALE", f"{scale}",
           "-SEEING_FWHM", f"{fwhm_arcsec}", "-PHOT_APERTURES", f"{2 * aperture_px:.2f}", "-DETECT_THRESH", "3",
           "-ANALYSIS_THRESH", "3", "-DETECT_MINAREA", "5", "-SATUR_LEVEL", "1e9", "-VERBOSE_TYPE", "QUIET",
           "-CHECKIMAGE_TYPE", "NONE", "-BACK_SIZE", "64"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work)
    return cat, time.perf_counter() - t0


def scamp(cats: list[Path], refcat: Path, work: Path) -> float:
    """SCAMP jointly on the catalogues against the LDAC reference; writes <cat>.head. Returns seconds."""
    cmd = ["scamp", *map(str, cats), "-c", "/dev/null", "-ASTREF_CATALOG", "FILE", "-ASTREFCAT_NAME", str(refcat),
           "-ASTREFCENT_KEYS", "X_WORLD,Y_WORLD", "-ASTREFERR_KEYS", "ERRA_WORLD,ERRB_WORLD,ERRTHETA_WORLD",
           "-ASTREFMAG_KEY", "MAG", "-DISTORT_DEGREES", "3", "-SOLVE_PHOTOM", "N", "-CHECKPLOT_TYPE", "NONE",
           "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N", "-MATCH", "Y", "-POSITION_MAXERR", "1.5",
           "-CROSSID_RADIUS", "1.0", "-SN_THRESHOLDS", "10,100", "-MOSAIC_TYPE", "UNCHANGED"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work)
    return time.perf_counter() - t0


def scamp_wcs(mosaic: Path, head: Path):
    """The mosaic's SCI header with SCAMP's .head keywords over it, as a WCS (TPV)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(mosaic) as h:
        hdr = h["SCI"].header.copy()
    for line in head.read_text().splitlines():
        if line[:8].strip() in ("END", "COMMENT", "HISTORY", "") or "=" not in line[:10]:
            continue
        card = fits.Card.fromstring(line)
        hdr[card.keyword] = card.value
    return WCS(hdr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gmosred-bench")
    ap.add_argument("--bands", default="i,r,HaC,Ha")
    args = ap.parse_args()
    for tool in ("source-extractor", "scamp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install source-extractor scamp")
    warnings.simplefilter("ignore")
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    from gmosred.frame.model import read_processed
    from gmosred.measure import photometry, refcat
    from gmosred.measure.step import measure_file, measure_frame
    from gmosred.pipeline.steps import SECTIONS
    from gmosred.simulate import model, truth as truthmod

    run, truth = full_run(args.workdir)
    work = args.workdir / "measure"
    work.mkdir(parents=True, exist_ok=True)
    frames = mosaics(run, truth, work, args.bands.split(","))
    gaia = refcat.standardise(truth.gaia, "gaia")
    ps1 = refcat.standardise(truth.ps1, "ps1", epoch=2012.0)
    gaia.meta["source"] = ps1.meta["source"] = ""  # named as the services are
    params = {k: SECTIONS[k] for k in ("measure", "detect", "astrometry", "photometry")}
    ours, theirs = [], []
    sex_cats = []
    for rec, path in frames:
        frame = read_processed(path)
        t0 = time.perf_counter()
        result, summary = measure_frame(frame, gaia, ps1, params, name=path.name)
        t_op = time.perf_counter() - t0
        gaia_file = work / "gaia.ecsv"
        ps1_file = work / "ps1.ecsv"
        if not gaia_file.exists():
            truth.gaia.write(gaia_file, overwrite=True)
            truth.ps1.write(ps1_file, overwrite=True)
        from dataclasses import replace

        p_files = dict(params, measure=replace(params["measure"], refcat=str(gaia_file), photcat=str(ps1_file)))
        t0 = time.perf_counter()
        measure_file(path, work, p_files)
        t_file = time.perf_counter() - t0
        hdr = result.planes[0].header
        obj = Table(result.tables["OBJCAT"].data)
        ref = result.tables["REFCAT"].data
        by = {int(n): k for k, n in enumerate(obj["NUMBER"])}
        rws = np.array([by[int(n)] for n in ref["OBJCAT_NUMBER"]])
        bright = (np.asarray(obj["FLAGS"])[rws] == 0) & (np.asarray(obj["SNR"])[rws] > 100)
        true = truthmod.mosaic_true_wcs(truth, rec, hdr)
        fit, floor, n = rms_against_truth(truth, rec, WCS(hdr), np.asarray(obj["X_IMAGE"])[rws][bright],
                                          np.asarray(obj["Y_IMAGE"])[rws][bright], true)
        true_zp = truthmod.zero_point(truth, rec)[0]
        ours.append((rec, fit, floor, n, hdr.get("PHOTZP", np.nan) - true_zp, t_op, t_file, hdr.get("WCSORDER")))
        # SExtractor on the same mosaic, with the same aperture
        scale = truth.layout.pixel_scale
        cat, t_sex = sextractor(path, work, summary["fwhm_arcsec"], scale, hdr["PHOTAPER"])
        sex_cats.append((rec, path, cat, t_sex, true, hdr["PHOTAPER"]))
    # SCAMP: all frames together, against Gaia moved to the frames' (mean) epoch by hand
    epoch = float(np.mean([model.julian_epoch(r["start"]) for r, *_ in sex_cats]))
    ref_ldac = work / "gaia_epoch.ldac"
    write_ldac_refcat(refcat.at_epoch(gaia, epoch), epoch, ref_ldac)
    t_scamp = scamp([c for _, _, c, *_ in sex_cats], ref_ldac, work)
    for rec, path, cat, t_sex, true, aper in sex_cats:
        head = cat.with_suffix(".head")
        w = scamp_wcs(path, head)
        with fits.open(cat) as h:
            s = Table(h["LDAC_OBJECTS"].data)
        good = (s["FLAGS"] == 0) & (s["SNR_WIN"] > 100)
        fit, floor, n = rms_against_truth(truth, rec, w, np.asarray(s["XWIN_IMAGE"])[good],
                                          np.asarray(s["YWIN_IMAGE"])[good], true)
        # SExtractor's zero point: catalogue minus aperture magnitude, median over matched stars
        ra, dec = w.all_pix2world(np.asarray(s["XWIN_IMAGE"]), np.asarray(s["YWIN_IMAGE"]), 1)
        si, ri = photometry.match_sky(ra, dec, ps1["ra"], ps1["dec"], 0.5)
        band = photometry.REFERENCE_BAND[rec["band"]]
        f = np.asarray(s["FLUX_APER"], float)[si]
        ok = (np.asarray(s["FLAGS"])[si] == 0) & (f > 0) & (np.asarray(s["SNR_WIN"])[si] > 20)
        zp = float(np.median(np.asarray(ps1[band])[ri][ok] + 2.5 * np.log10(f[ok] / rec["exptime"])))
        theirs.append((rec, fit, floor, n, zp - truthmod.zero_point(truth, rec)[0], t_sex, t_scamp / len(sex_cats)))
    print(f"{'frame':15s} {'band':4s} | {'gmosred: WCS rms':>16s} {'floor':>6s} {'n':>4s} {'dZP':>7s} {'s/frame':>8s} "
          f"| {'SCAMP: WCS rms':>14s} {'floor':>6s} {'n':>4s} {'SEx dZP':>7s} {'SEx s':>6s} {'SCAMP s':>7s}")
    for (rec, fit, floor, n, dzp, t_op, t_file, order), (_, sfit, sfloor, sn, sdzp, t_sex, t_sc) in zip(ours, theirs):
        print(f"{rec['file']:15s} {rec['band']:4s} | {fit:13.1f} mas {floor:6.1f} {n:4d} {dzp:+7.3f} {t_op:8.2f} "
              f"| {sfit:11.1f} mas {sfloor:6.1f} {sn:4d} {sdzp:+7.3f} {t_sex:6.2f} {t_sc:7.2f}")
    t_ours = np.mean([o[5] for o in ours])
    t_peer = np.mean([t[5] + t[6] for t in theirs])
    print(f"\nper frame: gmosred {t_ours:.2f} s (with file I/O {np.mean([o[6] for o in ours]):.2f} s); "
          f"SExtractor + SCAMP {t_peer:.2f} s: {t_peer / t_ours:.1f}x")


if __name__ == "__main__":
    main()
