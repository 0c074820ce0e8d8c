"""Reference catalogues: a user's file (FITS, CSV, VOTable, ECSV) read into one column set, and Gaia's
positions moved to a frame's epoch by their proper motions.

Columns are recognised by their usual names (:data:`ALIASES`: Gaia's, Pan-STARRS1's, SkyMapper's,
ATLAS-RefCat2's, VizieR's, SExtractor's), case-insensitively. A catalogue becomes an astropy Table with
``ra, dec`` (deg), ``ra_error, dec_error`` (mas), ``pmra, pmdec`` and their errors (mas/yr; pmra includes
cos dec), ``epoch`` (Julian year of the positions) and magnitudes ``<band>``/``<band>_err`` (``r``, ``i``,
``g``, ``G``...). What a column cannot be found for is left out; what a catalogue lacks that a use needs
is said by :func:`require`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import GmosredError

#: Our column -> the names it goes by, in order of preference.
ALIASES: dict[str, tuple[str, ...]] = {
    "ra": ("ra", "ra_icrs", "raj2000", "ramean", "ra_deg", "alpha_j2000", "raj2000_deg", "ra_icrs_deg"),
    "dec": ("dec", "de_icrs", "dej2000", "decmean", "dec_deg", "delta_j2000", "de"),
    "ra_error": ("ra_error", "e_ra_icrs", "e_raj2000", "ramean_err", "ramean_error", "e_ra", "raerr"),
    "dec_error": ("dec_error", "e_de_icrs", "e_dej2000", "decmean_err", "decmean_error", "e_de", "decerr"),
    "pmra": ("pmra",),
    "pmdec": ("pmdec", "pmde"),
    "pmra_error": ("pmra_error", "e_pmra"),
    "pmdec_error": ("pmdec_error", "e_pmde", "e_pmdec"),
    "epoch": ("ref_epoch", "epoch", "epoch_mean", "epmean"),
    "G": ("phot_g_mean_mag", "gmag"),
    "g": ("gmeanpsfmag", "g_psf", "gpsf", "g_mag", "gmag_ps1"),
    "g_err": ("gmeanpsfmagerr", "e_g_psf", "e_gpsf", "g_mag_err", "dg"),
    "r": ("rmeanpsfmag", "r_psf", "rpsf", "r_mag", "rmag", "r"),
    "r_err": ("rmeanpsfmagerr", "e_r_psf", "e_rpsf", "r_mag_err", "e_rmag", "r_err", "dr"),
    "i": ("imeanpsfmag", "i_psf", "ipsf", "i_mag", "imag", "i"),
    "i_err": ("imeanpsfmagerr", "e_i_psf", "e_ipsf", "i_mag_err", "e_imag", "i_err", "di"),
    "z": ("zmeanpsfmag", "z_psf", "zpsf", "z_mag", "zmag", "z"),
    "z_err": ("zmeanpsfmagerr", "e_z_psf", "e_zpsf", "z_mag_err", "e_zmag", "z_err", "dz"),
}
#: Catalogue magnitudes that flag a missing value (PS1 writes -999).
MISSING_MAG = -900.0


def read(path, epoch: float | None = None):
    """A user's catalogue file as our columns. ``epoch``: of its positions where the file does not say
    (Gaia's ref_epoch column, or an EPOCH keyword); without either, positions are taken as of the frame."""
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise GmosredError(f"{path}: no such catalogue file")
    fmt = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".xml": "votable", ".vot": "votable"}.get(path.suffix.lower())
    try:
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as e:  # astropy raises many kinds for a file it cannot parse
        raise GmosredError(f"{path}: not a readable catalogue (FITS, CSV, VOTable or ECSV): {e}") from None
    return standardise(table, str(path), epoch)


def standardise(table, where: str, epoch: float | None = None):
    """Our columns from a table with any of the usual names (:data:`ALIASES`)."""
    from astropy.table import Table

    lower = {name.lower(): name for name in table.colnames}
    out = Table()
    for ours, names in ALIASES.items():
        for n in names:
            if n in lower:
                out[ours] = np.ma.filled(np.ma.asarray(table[lower[n]], dtype=float), np.nan)
                break
    if "ra" not in out.colnames or "dec" not in out.colnames:
        raise GmosredError(f"{where}: has no RA/Dec columns (looked for {', '.join(ALIASES['ra'][:4])}, ... "
                           f"and {', '.join(ALIASES['dec'][:4])}, ...)")
    for band in ("g", "r", "i", "z", "G"):
        if band in out.colnames:
            out[band] = np.where(out[band] < MISSING_MAG, np.nan, out[band])
    if "epoch" not in out.colnames:
        given = epoch if epoch is not None else table.meta.get("EPOCH", table.meta.get("epoch"))
        out["epoch"] = np.full(len(out), np.nan if given is None else float(given))
    out.meta["source"] = where
    return out


def require(cat, columns, use: str, where: str) -> None:
    """Refuse a catalogue without what ``use`` needs, naming the missing columns."""
    missing = [c for c in columns if c not in cat.colnames or not np.isfinite(np.asarray(cat[c], float)).any()]
    if missing:
        raise GmosredError(f"{where}: has no {', '.join(missing)} column(s): cannot use it for {use}")


def at_epoch(cat, epoch: float):
    """A copy of the catalogue with positions moved to ``epoch`` (Julian year) by the proper motions, the
    position errors grown by the proper motions' errors times the interval. Rows without proper motions keep
    their positions with errors grown by a typical motion (``pm_unknown`` mas/yr) times the interval; rows
    without an epoch are taken as of ``epoch``."""
    out = cat.copy()
    n = len(out)
    dt = epoch - np.asarray(out["epoch"], float)
    dt = np.where(np.isfinite(dt), dt, 0.0)
    zeros = np.zeros(n)
    pmra = np.asarray(out["pmra"], float) if "pmra" in out.colnames else np.full(n, np.nan)
    pmdec = np.asarray(out["pmdec"], float) if "pmdec" in out.colnames else np.full(n, np.nan)
    known = np.isfinite(pmra) & np.isfinite(pmdec)
    dec = np.asarray(out["dec"], float)
    ra = np.asarray(out["ra"], float)
    out["ra"] = ra + np.where(known, pmra, 0.0) * dt / 3.6e6 / np.cos(np.radians(dec))
    out["dec"] = dec + np.where(known, pmdec, 0.0) * dt / 3.6e6
    for axis in ("ra", "dec"):
        err = np.asarray(out[f"{axis}_error"], float) if f"{axis}_error" in out.colnames else zeros + np.nan
        pm_err = (np.asarray(out[f"pm{axis}_error"], float) if f"pm{axis}_error" in out.colnames
                  else zeros + np.nan)
        grown = np.where(known, np.nan_to_num(pm_err, nan=0.0), PM_UNKNOWN) * np.abs(dt)
        out[f"{axis}_error"] = np.hypot(np.nan_to_num(err, nan=DEFAULT_ERROR_MAS), grown)
    out["epoch"] = np.full(n, float(epoch))
    out.meta["moved_to_epoch"] = float(epoch)
    return out


#: Position error (mas) of a catalogue that gives none; motion (mas/yr) assumed for rows without a proper motion.
DEFAULT_ERROR_MAS, PM_UNKNOWN = 50.0, 5.0
