"""Reference catalogues from their services, queried once per field and cached in the work folder.

* Gaia DR3 through ``astroquery.gaia``: an asynchronous ADQL job (the archive's synchronous queries stop at
  2000 rows, and a Galactic field like M8's holds many more), every row of ``gaiadr3.gaia_source`` in a
  cone, with the columns :mod:`refcat` reads.
* Pan-STARRS1 DR2 mean objects through MAST's catalogue API (``/api/v0.1/panstarrs/dr2/mean.csv``: the
  interface that astroquery.mast's Catalogs wraps), with its r, i (and g, z) PSF magnitudes.

A field is a cone on a grid of :data:`CELL_ARCMIN` cells, wide enough for any frame pointed within the cell
(:func:`field_of`), so the frames of one pointing share one query. The answer is cached as
``catalogs/<service>_<ra>_<dec>_<radius>.ecsv`` with the query that made it in its header; the fill is
locked (``fcntl``) so that parallel workers wait for the first one instead of asking again. A service
that cannot be reached or refuses is one :class:`CatalogUnavailable` line; nothing is cached then.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import math
import time
from pathlib import Path

from ..errors import GmosredError
from ..frame.model import write_bytes_atomic
from . import refcat

GAIA_URL = "https://gea.esac.esa.int/"
MAST_URL = "https://catalogs.mast.stsci.edu/"
CELL_ARCMIN = 2.0
#: Seconds before a service that failed for a field is asked again.
RETRY_AFTER = 600.0
#: Cone radius: a GMOS field's half-diagonal (3.9'), the largest pointing error searched and a cell's half-diagonal.
RADIUS_ARCMIN = 6.5
GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "pmra_error", "pmdec_error",
                "ref_epoch", "phot_g_mean_mag")
PS1_COLUMNS = ("objID", "raMean", "decMean", "gMeanPSFMag", "gMeanPSFMagErr", "rMeanPSFMag", "rMeanPSFMagErr",
               "iMeanPSFMag", "iMeanPSFMagErr", "zMeanPSFMag", "zMeanPSFMagErr")
PS1_EPOCH = 2012.0  # PS1 DR2 mean positions: the survey's mean epoch (no proper motions)


class CatalogUnavailable(GmosredError):
    """A catalogue service could not be reached, or refused the query."""


def field_of(ra: float, dec: float) -> tuple[float, float, float]:
    """The cone (ra, dec, radius in degrees) of the grid cell holding (ra, dec)."""
    cell = CELL_ARCMIN / 60.0
    dec_c = (math.floor(dec / cell) + 0.5) * cell
    ra_cell = cell / max(math.cos(math.radians(dec_c)), 1e-3)
    ra_c = ((math.floor(ra / ra_cell) + 0.5) * ra_cell) % 360.0
    return round(ra_c, 6), round(dec_c, 6), RADIUS_ARCMIN / 60.0


def cached(service: str, ra: float, dec: float, cache_dir, url: str | None = None, timeout: float = 120.0):
    """The catalogue (our columns) of the field holding (ra, dec), from the cache or the service."""
    from astropy.table import Table

    ra_c, dec_c, radius = field_of(ra, dec)
    folder = Path(cache_dir) / "catalogs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{service}_{ra_c:.4f}_{dec_c:+.4f}_{radius * 60:.1f}.ecsv"
    failed = path.with_name(f".{path.stem}.failed")
    with open(folder / f".{service}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                # a service that just failed is not asked again by every frame of the run
                if failed.exists() and time.time() - failed.stat().st_mtime < RETRY_AFTER:
                    raise CatalogUnavailable(failed.read_text().strip())
                try:
                    table, query = QUERIES[service](ra_c, dec_c, radius, url, timeout)
                except CatalogUnavailable as e:
                    write_bytes_atomic((str(e) + "\n").encode(), failed)
                    raise
                failed.unlink(missing_ok=True)
                table.meta["query"] = query
                text = io.StringIO()
                table.write(text, format="ascii.ecsv")
                write_bytes_atomic(text.getvalue().encode(), path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        raw = Table.read(path, format="ascii.ecsv")
    except Exception as e:  # astropy raises many kinds for a file it cannot parse
        raise CatalogUnavailable(f"{path}: not a readable cached catalogue ({_why(e)}): remove it to ask again") from None
    return refcat.standardise(raw, str(path), epoch=PS1_EPOCH if service == "ps1" else None)


def query_gaia(ra: float, dec: float, radius: float, url: str | None = None, timeout: float = 120.0):
    """Every Gaia DR3 source in the cone (an asynchronous job: no row limit). Returns (table, ADQL)."""
    import requests

    adql = (f"SELECT {', '.join(GAIA_COLUMNS)} FROM gaiadr3.gaia_source WHERE 1 = CONTAINS("
            f"POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.6f}, {dec:.6f}, {radius:.6f}))")
    from astroquery import log as aqlog

    try:
        # astroquery prints its progress and status to stdout and its log: kept out of the run's messages
        with contextlib.redirect_stdout(io.StringIO()), aqlog.log_to_list():
            from astroquery.gaia import GaiaClass  # its import asks the real archive for status messages

            gaia = GaiaClass(gaia_tap_server=url or GAIA_URL, gaia_data_server=url or GAIA_URL,
                             show_server_messages=False)
            job = gaia.launch_job_async(adql, output_format="votable", dump_to_file=False)
            table = job.get_results()
    except (OSError, requests.RequestException, ValueError) as e:
        raise CatalogUnavailable(f"Gaia archive {url or GAIA_URL}: {_why(e)}") from None
    if table is None:
        raise CatalogUnavailable(f"Gaia archive {url or GAIA_URL}: the job returned no table")
    return table, adql


def query_ps1(ra: float, dec: float, radius: float, url: str | None = None, timeout: float = 120.0):
    """Pan-STARRS1 DR2 mean objects in the cone with two or more detections. Returns (table, query URL)."""

    import requests
    from astropy.table import Table

    base = (url or MAST_URL).rstrip("/") + "/api/v0.1/panstarrs/dr2/mean.csv"
    params = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "radius": f"{radius:.6f}", "nDetections.gte": "2",
              "columns": "[" + ",".join(PS1_COLUMNS) + "]", "pagesize": "500000"}
    try:
        r = requests.get(base, params=params, timeout=timeout)
        r.raise_for_status()
    except requests.RequestException as e:
        raise CatalogUnavailable(f"MAST Pan-STARRS1 {base}: {_why(e)}") from None
    text = r.text.strip()
    if not text:
        return Table(names=PS1_COLUMNS, dtype=[float] * len(PS1_COLUMNS)), r.url
    try:
        table = Table.read(text.splitlines(), format="ascii.csv")
    except Exception as e:  # a page that is not CSV: a proxy's error page, a changed service
        raise CatalogUnavailable(f"MAST Pan-STARRS1 {base}: answer is not a CSV table ({e})") from None
    return table, r.url


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


QUERIES = {"gaia": query_gaia, "ps1": query_ps1}

