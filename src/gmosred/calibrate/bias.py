"""Master bias (gbias): overscan and trim every bias, combine them per CCD -> MCbias.fits."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engines import combine as comb
from ..frame import provenance as prov
from ..frame.model import Plane, timestamp, write_planes
from . import overscan as ovs
from .inputs import close_all, input_names, open_inputs


def noise_var(reader, ccd: int) -> np.ndarray:
    """Read noise plus overscan-level variance of a CCD plane (ADU^2), as a row vector."""
    rn = reader.amp_map(ccd, "read_noise") / reader.amp_map(ccd, "gain")
    return rn * rn + reader.amp_map(ccd, "overscan_var")


def make_master_bias(paths, out, combine: comb.CombineParams = comb.CombineParams(), *,
                     overscan: ovs.OverscanParams = ovs.OverscanParams(), tmpdir=None) -> Path:
    """Combine raw biases into a master bias (SCI/VAR/DQ per CCD, ADU); returns the output path.
    The combine defaults are gbias': average with avsigclip 3/3, nkeep 1; VAR from the scatter."""
    out = Path(out)
    readers = open_inputs(paths, overscan, obstype="BIAS", what="master bias",
                          tmpdir=tmpdir or out.parent)
    try:
        first = readers[0]
        need_var = combine.reject == "varclip" or combine.var == "propagate"

        def planes():  # one CCD at a time: each is written and let go before the next is combined
            for ccd in first.ccds:
                def provider(r):
                    var_row = noise_var(r, ccd) if need_var else None
                    return lambda y0, y1, out: comb.Band(
                        r.band(ccd, y0, y1, out), np.broadcast_to(var_row, out.shape) if need_var else None)
                res = comb.combine([provider(r) for r in readers], first.shape(ccd), combine)
                hdr = first.header(ccd)
                hdr["BUNIT"] = ("adu", "Physical units")
                yield Plane(res.sci, hdr, res.var, res.dq, extver=ccd)
                del res

        started = timestamp()
        phu = combine_keywords(first.raw.phu.copy(), readers, combine, overscan)
        phu["OBJECT"] = "Bias"
        tables: dict = {}
        prov.record(phu, tables, "bias", "GBIAS", inputs=[r.path for r in readers], started=started,
                    params={"overscan": overscan, "combine": combine})
        return write_planes(phu, planes(), out, tables)
    finally:
        close_all(readers)


def setup_keywords(phu, raw) -> None:
    """The read mode of a product's raw frames, which its headers no longer show once reduced."""
    phu["RDSPEED"] = (raw.read_speed, "Read-out speed of the raw frames")
    phu["GAINSET"] = (raw.gain_setting, "Gain setting of the raw frames")


def combine_keywords(phu, readers, cp: comb.CombineParams, op: ovs.OverscanParams):
    """The IRAF keywords of a master calibration: its inputs and combine settings."""
    setup_keywords(phu, readers[0].raw)
    phu["NCOMBINE"] = (len(readers), "Number of frames combined")
    for k, name in enumerate(input_names(readers), start=1):
        phu[f"IMCMB{k:03d}"] = name
    phu["COMBTYPE"] = (cp.method, "Combine method")
    phu["REJECT"] = (cp.reject, "Rejection")
    phu["LSIGMA"], phu["HSIGMA"], phu["NKEEP"] = cp.lsigma, cp.hsigma, cp.nkeep
    trim_keywords(phu, readers[0])
    return phu


def trim_keywords(phu, reader) -> None:
    """What the overscan and trim did: OVSMODE, TRIMMED and (detectors with bottom rows) BOTROWS."""
    phu["OVSMODE"] = (reader.planes[reader.ccds[0]][0].overscan.mode, "Overscan mode used (none: not subtracted)")
    phu["TRIMMED"] = ("yes", "Overscan section trimmed")
    if reader.botrows != "none":
        phu["BOTROWS"] = (reader.botrows, f"Bottom {reader.raw.detector.bottom_rows} unbinned rows")
