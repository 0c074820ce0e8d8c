"""The measure step: a mosaic's sources, its WCS fitted to Gaia and its zero point -> c<mrg file>.fits.

``measure_frame`` is the operation (a mosaic Frame and the two catalogues in, the calibrated Frame out);
``measure_file`` reads, fetches or reads the catalogues, calls it, records provenance and writes the
product with OBJCAT and REFCAT (DRAGONS' table names), a FITS table of both beside it
(``<product>_cat.fits``) and DS9 region files (``<product>_obj.reg``, ``<product>_ref.reg``).

A frame whose catalogue cannot be had, or whose sources do not match it significantly, keeps its header
WCS and is marked (WCSCAT = 'NONE', WCSFAIL = why; PHOTZP absent): one warning line, and the run goes on.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import instruments
from ..errors import GmosredError
from ..frame import provenance as prov
from ..frame.model import Frame, Plane, filter_name, read, stem, timestamp, write
from ..params import checked, param
from . import astrometry, photometry, refcat, services, sources

log = logging.getLogger("gmosred")

#: WCS keywords replaced by the fitted solution in every SCI/VAR/DQ header.
_WCS_KEYS = ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
             "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CUNIT1", "CUNIT2", "LONPOLE", "LATPOLE",
             "RADESYS", "RADECSYS", "EQUINOX", "WCSAXES", "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER")


@checked
class MeasureParams:
    """Where the catalogues come from, and the product's name."""

    refcat: str = param("", "astrometric catalogue file (FITS, CSV, ECSV, VOTable); '' = Gaia DR3, queried once per "
                        "field and cached in the work folder")
    photcat: str = param("", "photometric catalogue file; '' = Pan-STARRS1 DR2, queried and cached")
    gaia_url: str = param(services.GAIA_URL, "the Gaia archive (TAP)")
    mast_url: str = param(services.MAST_URL, "MAST's catalogue service (Pan-STARRS1)")
    prefix: str = param("c", "prefix added to the measured frames' names")
    regions: bool = param(True, "write DS9 region files of the sources and the reference stars")


def frame_epoch(phu: fits.Header, where: str) -> float:
    """Julian epoch of a frame from DATE-OBS and TIME-OBS (or MJD-OBS)."""
    from astropy.time import Time

    try:
        if "MJD-OBS" in phu:
            return float(Time(float(phu["MJD-OBS"]), format="mjd").jyear)
        return float(Time(f"{str(phu['DATE-OBS']).strip()}T{str(phu.get('TIME-OBS', '00:00:00')).strip()}").jyear)
    except (KeyError, ValueError) as e:
        raise GmosredError(f"{where}: no usable DATE-OBS/TIME-OBS for the epoch ({e})") from None


def measure_frame(frame: Frame, astro_cat, phot_cat, params: dict, name: str = "frame") -> tuple[Frame, dict]:
    """Sources, WCS and zero point of a mosaic frame; returns (calibrated frame, summary). ``astro_cat`` and
    ``phot_cat``: catalogues with our columns (:mod:`refcat`), or a string saying why there is none."""
    from astropy.table import Table

    header_wcs = _header_wcs(frame, name)
    plane = frame.planes[0]
    phu = frame.phu
    scale = float(np.sqrt(abs(np.linalg.det(header_wcs.pixel_scale_matrix)))) * 3600.0
    epoch = frame_epoch(phu, name)
    exptime = float(phu.get("EXPTIME", 0.0))
    band = filter_name(phu)
    det, apar, ppar = params["detect"], params["astrometry"], params["photometry"]
    ccd_of = _ccd_of(phu, plane)
    tiles = None if ccd_of is None else np.array([ccd_of(x) for x in range(1, plane.sci.shape[1] + 1)])
    cat, info = sources.detect(plane.sci, plane.var, plane.dq, scale, det, tiles=tiles)
    summary = {"n_sources": len(cat), "fwhm_arcsec": info["fwhm_px"] * scale, "background": info["background"],
               "noise": info["noise"], "epoch": epoch}
    wcs, sol, why_wcs, astro_ref = header_wcs, None, "", None
    if isinstance(astro_cat, str):
        why_wcs = astro_cat
    else:
        try:
            astro_ref = refcat.at_epoch(astro_cat, epoch)
            sol = astrometry.solve(cat, astro_ref, header_wcs, plane.sci.shape, scale, apar, fwhm_px=info["fwhm_px"])
            wcs = sol.wcs
        except (astrometry.NoSolution, GmosredError) as e:
            why_wcs = str(e)
    matched = np.zeros(len(cat), bool)
    if sol is not None:
        matched[sol.src_index] = True
        sources.classify(cat, matched)
        summary.update(wcs_order=sol.order, wcs_stars=sol.n_used, wcs_rms_mas=sol.rms_mas, vote=sol.vote)
    else:
        log.warning(f"{name}: astrometry not calibrated (header WCS kept): {why_wcs}")
    ra, dec = wcs.all_pix2world(np.asarray(cat["X_IMAGE"], float), np.asarray(cat["Y_IMAGE"], float), 1)
    cat["RA"], cat["DEC"] = ra, dec
    zp, why_zp, si, ri = None, "", None, None
    if sol is None:
        why_zp = "no astrometric solution"
    elif isinstance(phot_cat, str):
        why_zp = phot_cat
    else:
        try:
            apc, apc_err = photometry.aperture_correction(cat, sol.src_index, info["fwhm_px"])
            si, ri = photometry.match_sky(ra, dec, phot_cat["ra"], phot_cat["dec"], ppar.match_radius)
            zp = photometry.zero_point(cat, phot_cat, si, ri, band, exptime, apc, ppar, ccd_of=ccd_of)
            summary.update(zp=zp.zp, zp_err=zp.zp_err, colour_term=zp.colour_term, zp_stars=zp.n_used,
                           aperture_correction=apc, ccd_offsets=zp.ccd_offsets)
        except GmosredError as e:
            why_zp = str(e)
    if zp is None:
        log.warning(f"{name}: no zero point: {why_zp}")
    else:
        # calibrated magnitudes: the PSF fit's (point sources) and the Kron ellipse's (extended sources)
        for kind, corr in (("PSF", apc), ("AUTO", 1.0)):
            flux = np.asarray(cat[f"FLUX_{kind}"], float) * corr
            with np.errstate(divide="ignore", invalid="ignore"):
                cat[f"MAG_{kind}"] = np.where(flux > 0, zp.zp - 2.5 * np.log10(flux / exptime), np.nan)
                cat[f"MAGERR_{kind}"] = np.where(flux > 0, 1.0857 * np.asarray(cat[f"FLUXERR_{kind}"], float) * corr
                                                 / flux, np.nan)
    # the product: headers, OBJCAT, REFCAT
    out_phu = phu.copy()
    hdr = plane.header.copy()
    _put_wcs(hdr, wcs if sol is not None else None)
    _stamp_wcs(hdr, sol, epoch, astro_cat, why_wcs)
    _stamp_photometry(hdr, zp, band, phot_cat, why_zp, phu)
    if zp is not None:
        hdr["PHOTAPCR"] = (round(apc, 5), "PSF flux to a 4 FWHM aperture (ratio)")
        hdr["PHOTAPER"] = (round(det.aperture * info["fwhm_px"], 3), "[pixel] radius of FLUX_APER's aperture")
    hdr["FWHMPSF"] = (round(summary["fwhm_arcsec"], 3), "[arcsec] seeing FWHM of the frame's stars")
    if info.get("psf") is not None:
        hdr["PSFBETA"] = (round(info["psf"].beta, 3), "Moffat beta of the fitted PSF")
        hdr["PSFELLIP"] = (round(info["psf"].ellipticity, 4), "ellipticity (1 - b/a) of the fitted PSF")
    hdr["SKYLEVEL"] = (round(info["background"], 2), "[electron] median background")
    hdr["SKYNOISE"] = (round(info["noise"], 3), "[electron] typical pixel noise")
    tables = dict(frame.tables)
    tables["OBJCAT"] = _table_hdu(Table(cat), "OBJCAT")
    if sol is not None:
        tables["REFCAT"] = _table_hdu(_refcat(astro_ref, sol, cat, zp, phot_cat, si, ri), "REFCAT")
    result = Frame(out_phu, [Plane(plane.sci, hdr, plane.var, plane.dq, extver=plane.extver)], tables=tables)
    return result, summary


def _ccd_of(phu, plane):
    """Mosaic x (1-based) -> CCD, from the detector's tile widths and gap at the frame's binning."""
    try:
        det = instruments.detector_set(str(phu["DETID"]).strip())
        bx = int(str(phu.get("CCDSUM", plane.header.get("CCDSUM", "1 1"))).split()[0])
    except (KeyError, ValueError, instruments.UnknownInstrumentError):
        return None
    width, gap = det.ccd_shape[1] // bx, det.gap // bx
    return lambda x: 1 + int(min(max((x - 1) // (width + gap), 0), 2))


def _put_wcs(hdr: fits.Header, wcs) -> None:
    if wcs is None:
        return
    for key in list(hdr.keys()):
        if key in _WCS_KEYS or key[:2] in ("A_", "B_") or key[:3] in ("AP_", "BP_") or key.startswith("PV"):
            hdr.remove(key, ignore_missing=True, remove_all=True)
    hdr.update(wcs.to_header(relax=True))
    # CDi_j as the Gemini headers have them (astropy writes PCi_j with CDELTi)
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.pixel_scale_matrix
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        hdr.remove(key, ignore_missing=True)
    for i in (1, 2):
        for j in (1, 2):
            hdr[f"CD{i}_{j}"] = (float(cd[i - 1, j - 1]), "WCS matrix, fitted to the reference catalogue")


def _stamp_wcs(hdr, sol, epoch: float, cat, why: str) -> None:
    if sol is None:
        hdr["WCSCAT"] = ("NONE", "astrometric catalogue: none, header WCS kept")
        hdr["WCSFAIL"] = (why[:60], "why no fit")
        return
    hdr["WCSCAT"] = (_catalog_name(cat, "Gaia DR3"), "astrometric reference catalogue")
    hdr["WCSEPOCH"] = (round(epoch, 4), "epoch the catalogue was moved to")
    hdr["WCSNMAT"] = (int(sol.n_used), "stars used in the WCS fit")
    hdr["WCSRMS"] = (round(sol.rms_mas, 2), "[mas] rms residual of the stars used")
    hdr["WCSINTR"] = (round(sol.intrinsic_mas, 2), "[mas] scatter beyond the quoted errors")
    hdr["WCSORDER"] = (int(sol.order), "polynomial order (1 = TAN, >1 = TAN-SIP)")


def _stamp_photometry(hdr, zp, band: str, cat, why: str, phu) -> None:
    try:
        nominal = instruments.nominal_zeropoint(str(phu.get("DETID", "")).strip(), band)
    except instruments.UnknownInstrumentError:
        nominal = None
    if nominal is not None:
        hdr["PHOTZPNM"] = (nominal, "nominal zero point of the detector and filter")
    if zp is None:
        hdr["PHOTFAIL"] = (why[:60], "why no PHOTZP")
        return
    hdr["PHOTZP"] = (round(zp.zp, 4), "mag = PHOTZP - 2.5 log(e-/s) + PHOTCT x PHOTCOL")
    hdr["PHOTZPER"] = (round(zp.zp_err, 4), "error of PHOTZP (mag)")
    hdr["PHOTCT"] = (round(zp.colour_term, 4), "colour term (mag per mag of PHOTCOL)")
    hdr["PHOTCTER"] = (round(zp.colour_term_err, 4), "error of PHOTCT")
    hdr["PHOTCOL"] = (zp.colour, "catalogue colour of the colour term")
    hdr["PHOTBAND"] = (zp.reference_band, "catalogue band calibrated against")
    hdr["PHOTCAT"] = (_catalog_name(cat, "Pan-STARRS1 DR2"), "photometric reference catalogue")
    hdr["PHOTNSTR"] = (int(zp.n_used), "stars used for the zero point")
    hdr["PHOTSCAT"] = (round(zp.scatter, 4), "intrinsic scatter of the stars (mag)")
    hdr["PHOTMETH"] = ("normal-star colours" if zp.narrow else "same band",
                       "narrow band: via the stars' continuum colours" if zp.narrow else "broad band")


def _catalog_name(cat, default: str) -> str:
    source = str(cat.meta.get("source", "")) if hasattr(cat, "meta") else ""
    return default if "catalogs" in source.replace("\\", "/").split("/") or not source else Path(source).name[:68]


#: Units of the catalogues' columns (TUNITn), by name.
UNITS = {"X_IMAGE": "pix", "Y_IMAGE": "pix", "X_ERR": "pix", "Y_ERR": "pix", "FLUX_APER": "electron",
         "FLUXERR_APER": "electron", "FLUX_BIG": "electron", "FLUXERR_BIG": "electron", "FLUX_AUTO": "electron",
         "FLUXERR_AUTO": "electron", "FLUX_MAX": "electron", "BACKGROUND": "electron", "FWHM_IMAGE": "pix",
         "THETA_IMAGE": "deg", "RA": "deg", "DEC": "deg", "MAG_PSF": "mag", "MAGERR_PSF": "mag",
         "MAG_AUTO": "mag", "MAGERR_AUTO": "mag", "FLUX_PSF": "electron", "FLUXERR_PSF": "electron",
         "BACKGROUND_PSF": "electron", "RA_ERR": "mas",
         "DEC_ERR": "mas", "PMRA": "mas / yr", "PMDEC": "mas / yr", "G": "mag", "DRA_MAS": "mas", "DDEC_MAS": "mas",
         "MAG_R": "mag", "MAG_I": "mag"}


def _table_hdu(table, name: str) -> fits.BinTableHDU:
    """A binary table extension with its columns' units as TUNITn (written as strings: FITS has no 'electron')."""
    for col in table.colnames:
        table[col].unit = None
    hdu = fits.BinTableHDU(table, name=name)
    for i, col in enumerate(table.colnames, start=1):
        if col in UNITS:
            hdu.header[f"TUNIT{i}"] = UNITS[col]
    return hdu


def _refcat(astro, sol, cat, zp, phot, si, ri):
    """REFCAT: the reference stars matched, at the frame's epoch, with the residuals of the fit."""
    from astropy.table import Table

    t = Table()
    rows = sol.ref_index
    t["NUMBER"] = np.arange(1, len(rows) + 1, dtype=np.int32)
    t["OBJCAT_NUMBER"] = np.asarray(cat["NUMBER"])[sol.src_index]
    for ours, col in (("RA", "ra"), ("DEC", "dec"), ("RA_ERR", "ra_error"), ("DEC_ERR", "dec_error"), ("PMRA", "pmra"),
                      ("PMDEC", "pmdec"), ("G", "G")):
        t[ours] = np.asarray(astro[col], float)[rows] if col in astro.colnames else np.full(len(rows), np.nan)
    t["DRA_MAS"], t["DDEC_MAS"] = sol.residuals_mas[:, 0], sol.residuals_mas[:, 1]
    t["USED"] = sol.used
    if zp is not None and phot is not None and si is not None:
        by_src = dict(zip(np.asarray(si).tolist(), np.asarray(ri).tolist()))
        for band in ("r", "i"):
            if band in phot.colnames:
                vals = np.asarray(phot[band], float)
                t[f"MAG_{band.upper()}"] = [vals[by_src[s]] if s in by_src else np.nan for s in sol.src_index.tolist()]
    return t


def reference_catalogs(frame: Frame, params: dict, cache_dir, name: str = "frame"):
    """(astrometric, photometric) catalogues for a frame: the files given, or the services' answers for its field
    (cached); either one is a string saying why where it cannot be had."""
    m = params["measure"]
    ra, dec = _centre(frame, name)
    out = []
    for path, service, url in ((m.refcat, "gaia", m.gaia_url), (m.photcat, "ps1", m.mast_url)):
        try:
            out.append(refcat.read(path) if path else services.cached(service, ra, dec, cache_dir, url=url))
        except GmosredError as e:
            out.append(str(e))
    return out[0], out[1]


def _header_wcs(frame: Frame, name: str):
    """The telescope's WCS of a mosaic's one plane."""
    from astropy.wcs import WCS, FITSFixedWarning

    if len(frame.planes) != 1:
        raise GmosredError(f"{name}: has {len(frame.planes)} SCI extensions: measure a mosaic (mrg) file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(frame.planes[0].header)
    if not w.has_celestial:
        raise GmosredError(f"{name}: has no celestial WCS in its SCI header")
    return w


def _centre(frame: Frame, name: str) -> tuple[float, float]:
    ny, nx = frame.planes[0].sci.shape
    ra, dec = _header_wcs(frame, name).all_pix2world([[(nx + 1) / 2, (ny + 1) / 2]], 1)[0]
    return float(ra), float(dec)


def measure_file(path, outdir, params: dict) -> Path:
    """Measure a mosaic ``mrg<name>.fits`` into ``<outdir>/c<mrg...>.fits`` (and its catalogue and region files)."""
    started = timestamp()
    path = Path(path)
    frame = read(path)
    if not isinstance(frame, Frame):
        raise GmosredError(f"{path}: is a raw file: reduce and mosaic it first")
    prov.refuse_twice(frame.phu, "MEASURE", path)
    astro, phot = reference_catalogs(frame, params, outdir, path.name)
    result, summary = measure_frame(frame, astro, phot, params, name=path.name)
    inputs = [path] + [Path(c.meta["source"]) for c in (astro, phot) if not isinstance(c, str) and
                       Path(str(c.meta.get("source", ""))).is_file()]
    prov.record(result.phu, result.tables, "measure", "MEASURE", inputs=inputs, started=started,
                params={k: params[k] for k in ("measure", "detect", "astrometry", "photometry")}, carried=[frame])
    out = Path(outdir) / f"{params['measure'].prefix}{stem(path)}.fits"
    written = write(result, out)
    _beside(result, out, params["measure"].regions)
    return written


def _beside(result: Frame, out: Path, regions: bool) -> None:
    """The catalogue file and the region files next to the product (each written atomically)."""
    from ..frame.model import write_atomic, write_bytes_atomic

    hdus = [fits.PrimaryHDU()] + [result.tables[n] for n in ("OBJCAT", "REFCAT") if n in result.tables]
    write_atomic(fits.HDUList(hdus), out.with_name(out.stem + "_cat.fits"))
    if not regions:
        return
    obj = result.tables["OBJCAT"].data
    fw = float(result.planes[0].header.get("FWHMPSF", 1.0))
    lines = ["# Region file format: DS9 version 4.1", "global color=green", "fk5"]
    lines += [f"circle({r:.7f},{d:.7f},{max(fw, 0.5):.2f}\") # text={{{n}}}"
              for r, d, n in zip(obj["RA"], obj["DEC"], obj["NUMBER"])]
    write_bytes_atomic(("\n".join(lines) + "\n").encode(), out.with_name(out.stem + "_obj.reg"))
    if "REFCAT" in result.tables:
        ref = result.tables["REFCAT"].data
        lines = ["# Region file format: DS9 version 4.1", "global color=cyan", "fk5"]
        lines += [f"box({r:.7f},{d:.7f},{1.5 * max(fw, 0.5):.2f}\",{1.5 * max(fw, 0.5):.2f}\",0)" for r, d in
                  zip(ref["RA"], ref["DEC"])]
        write_bytes_atomic(("\n".join(lines) + "\n").encode(), out.with_name(out.stem + "_ref.reg"))

