"""Master bias (gbias): overscan and trim every bias, combine them per CCD -> MCbias.fits."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import combine as comb
from ..frame import Plane, timestamp, write_planes
from . import overscan as ovs
from .inputs import close_all, input_names, open_inputs


@dataclass(frozen=True)
class BiasParams:
    """gbias' defaults: average with avsigclip 3/3, nkeep 1; VAR from the scatter of the kept values."""

    overscan: ovs.OverscanParams = field(default_factory=ovs.OverscanParams)
    combine: comb.CombineParams = field(default_factory=comb.CombineParams)


def noise_var(reader, ccd: int) -> np.ndarray:
    """Read noise plus overscan-level variance of a CCD plane (ADU^2), as a row vector."""
    rn = reader.amp_map(ccd, "read_noise") / reader.amp_map(ccd, "gain")
    return rn * rn + reader.amp_map(ccd, "overscan_var")


def make_master_bias(paths, out, params: BiasParams = BiasParams(), tmpdir=None) -> Path:
    """Combine raw biases into a master bias (SCI/VAR/DQ per CCD, ADU); returns the output path."""
    out = Path(out)
    readers = open_inputs(paths, params.overscan, obstype="BIAS", what="master bias",
                          tmpdir=tmpdir or out.parent)
    try:
        first = readers[0]
        need_var = params.combine.reject == "varclip" or params.combine.var == "propagate"

        def planes():  # one CCD at a time: each is written and let go before the next is combined
            for ccd in first.ccds:
                def provider(r):
                    var_row = noise_var(r, ccd) if need_var else None
                    return lambda y0, y1, out: comb.Band(
                        r.band(ccd, y0, y1, out), np.broadcast_to(var_row, out.shape) if need_var else None)
                res = comb.combine([provider(r) for r in readers], first.shape(ccd), params.combine)
                hdr = first.header(ccd)
                hdr["BUNIT"] = ("adu", "Physical units")
                yield Plane(res.sci, hdr, res.var, res.dq, extver=ccd)
                del res

        phu = provenance(first.raw.phu.copy(), "GBIAS", readers, params.combine, params.overscan)
        phu["OBJECT"] = "Bias"
        return write_planes(phu, planes(), out)
    finally:
        close_all(readers)


def provenance(phu, stamp: str, readers, cp: comb.CombineParams, op: ovs.OverscanParams):
    """Time stamp, inputs and parameters of a master calibration, in its primary header."""
    from .. import __version__

    now = timestamp()
    phu[stamp] = (now, f"UT time stamp for {stamp} (gmosred {__version__})")
    phu["NCOMBINE"] = (len(readers), "Number of frames combined")
    for k, name in enumerate(input_names(readers), start=1):
        phu[f"IMCMB{k:03d}"] = name
    phu["COMBTYPE"] = (cp.method, "Combine method")
    phu["REJECT"] = (cp.reject, "Rejection")
    phu["LSIGMA"], phu["HSIGMA"], phu["NKEEP"] = cp.lsigma, cp.hsigma, cp.nkeep
    mode = ovs.resolve(op, readers[0].raw.detector.family).mode
    phu["OVSMODE"] = (mode, "Overscan mode used (none: not subtracted)")
    phu["TRIMMED"] = ("yes", "Overscan section trimmed")
    return phu
