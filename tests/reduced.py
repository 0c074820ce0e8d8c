"""Science frames of a simulated run reduced and mosaicked the cookbook's way, for the tests that need mosaics."""
from __future__ import annotations


def reduce_and_mosaic(out, truth, work, recs) -> list[tuple[dict, object, object]]:
    """(record, rg file, mrg file) of each science record: one master bias from every bias, a master flat per band
    from that band's twilight flats."""
    from gmosred.calibrate.bias import make_master_bias
    from gmosred.calibrate.flat import make_master_flat
    from gmosred.calibrate.reduce import reduce_frame
    from gmosred.mosaic import mosaic_file

    raw = lambda r: str(out / "raw" / f"{r['file']}.fits")  # noqa: E731
    bias = make_master_bias([raw(r) for r in truth.frames if r["kind"] == "bias"], work / "MCbias.fits")
    flats, res = {}, []
    for rec in recs:
        band = rec["band"]
        if band not in flats:
            flats[band] = make_master_flat([raw(r) for r in truth.frames if r["kind"] == "twilight" and r["band"] == band],
                                           work / f"MCflat_{band}.fits", bias=bias)
        rg = reduce_frame(raw(rec), work, bias=bias, flat=flats[band])
        res.append((rec, rg, mosaic_file(rg, work)))
    return res
