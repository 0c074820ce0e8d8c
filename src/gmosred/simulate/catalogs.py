"""A local stand-in for the catalogue services, serving the simulated sky's Gaia and Pan-STARRS1 tables.

On 127.0.0.1 only, the two interfaces :mod:`gmosred.measure.services` uses:

* the Gaia archive's TAP (as ``astroquery.gaia`` drives it): ``POST /tap-server/tap/async`` starts a job
  (303 to the job), ``GET .../async/<id>/phase`` says COMPLETED, ``GET .../async/<id>/results/result`` is the
  VOTable of every row in the query's ``CIRCLE('ICRS', ra, dec, r)``; the synchronous ``/tap/sync`` is
  answered too, cut at 2000 rows as the real archive cuts it;
* MAST's ``GET /api/v0.1/panstarrs/dr2/mean.csv?ra=&dec=&radius=&columns=[...]``: CSV.

``refuse=True`` answers every request with HTTP 503 (a service down); every request is logged.
"""
from __future__ import annotations

import io
import itertools
import re
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import numpy as np

from .standin import StandIn
from .standin import send as _send

SYNC_ROW_LIMIT = 2000


def _cone(table, ra_col: str, dec_col: str, ra: float, dec: float, radius: float):
    r, d = np.radians(np.asarray(table[ra_col], float)), np.radians(np.asarray(table[dec_col], float))
    r0, d0 = np.radians(ra), np.radians(dec)
    cosang = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(r - r0)
    return table[cosang >= np.cos(np.radians(radius))]


class StandInCatalogs(StandIn):
    """Serve ``gaia`` and ``ps1`` (astropy Tables with the services' column names) on 127.0.0.1."""

    def __init__(self, gaia, ps1, *, refuse: bool = False):
        self.gaia, self.ps1, self.refuse = gaia, ps1, refuse
        self.requests: list[tuple[str, str]] = []
        self._jobs: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        super().__init__()

    # ------------------------------------------------------------------ answers
    protocol = "HTTP/1.0"  # one request per connection, as astroquery's TAP client expects

    def _request(self, h: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        url = urlparse(h.path)
        self.requests.append((method, h.path))
        if self.refuse:
            return _send(h, 503, b"service unavailable", "text/plain")
        path = url.path.rstrip("/")
        if path.endswith("/panstarrs/dr2/mean.csv") and method == "GET":
            return self._ps1(h, parse_qs(url.query))
        m = re.fullmatch(r"/tap-server/tap/(sync|async)(?:/(\d+)(/phase|/results/result)?)?", path)
        if not m:
            return _send(h, 404, b"not found", "text/plain")
        kind, job, what = m.groups()
        if method == "POST" and job is None:
            form = {k.upper(): v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            query = form.get("QUERY", "")
            try:
                table = self._gaia_rows(query)
            except ValueError as e:
                return _send(h, 400, str(e).encode(), "text/plain")
            if kind == "sync":
                return _send(h, 200, _votable(table[:SYNC_ROW_LIMIT]), "text/xml")
            jid = str(next(self._ids))
            self._jobs[jid] = _votable(table)
            host, port = h.server.server_address[:2]
            return _send(h, 303, b"", "text/plain", {"Location": f"http://{host}:{port}/tap-server/tap/async/{jid}"})
        if job not in self._jobs:
            return _send(h, 404, b"no such job", "text/plain")
        if what == "/phase":
            return _send(h, 200, b"COMPLETED", "text/plain")
        if what == "/results/result":
            return _send(h, 200, self._jobs[job], "text/xml")
        xml = (f'<?xml version="1.0"?><uws:job xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0"><uws:jobId>{job}'
               f'</uws:jobId><uws:phase>COMPLETED</uws:phase></uws:job>')
        return _send(h, 200, xml.encode(), "text/xml")

    def _gaia_rows(self, query: str):
        m = re.search(r"CIRCLE\(\s*'ICRS'\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\)", query, re.I)
        if not m or "gaia_source" not in query:
            raise ValueError("the stand-in answers cone queries of gaiadr3.gaia_source only")
        sel = re.match(r"\s*SELECT\s+(.*?)\s+FROM", query, re.I | re.S)
        cols = [c.strip() for c in sel.group(1).split(",")] if sel else list(self.gaia.colnames)
        unknown = [c for c in cols if c not in self.gaia.colnames]
        if unknown:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}")
        return _cone(self.gaia, "ra", "dec", *(float(v) for v in m.groups()))[cols]

    def _ps1(self, h, q: dict) -> None:
        try:
            ra, dec, radius = (float(q[k][0]) for k in ("ra", "dec", "radius"))
        except (KeyError, ValueError):
            return _send(h, 400, b"ra, dec and radius are required", "text/plain")
        cols = q.get("columns", ["[" + ",".join(self.ps1.colnames) + "]"])[0].strip("[]").split(",")
        cols = [c.strip() for c in cols if c.strip()]
        unknown = [c for c in cols if c not in self.ps1.colnames]
        if unknown:
            return _send(h, 400, f"unknown column(s) {', '.join(unknown)}".encode(), "text/plain")
        rows = _cone(self.ps1, "raMean", "decMean", ra, dec, radius)[cols]
        buf = io.StringIO()
        rows.write(buf, format="ascii.csv")
        return _send(h, 200, buf.getvalue().encode(), "text/csv")


def _votable(table) -> bytes:
    from astropy.io.votable import from_table

    buf = io.BytesIO()
    from_table(table).to_xml(buf)
    return buf.getvalue()
