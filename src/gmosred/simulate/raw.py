"""Raw GMOS-S files of the simulated run: headers modelled on a real raw header, noisy pixels."""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from importlib import resources

import numpy as np
from astropy.io import fits

from .. import instruments
from . import layouts, model
from . import plan as obsplan

CALTYPES = {"BIAS": "bias", "Twilight": "twilight"}


def _template() -> tuple[fits.Header, fits.Header]:
    """Primary and extension header of the real raw file S20120922S0406 (keywords, order, comments)."""
    text = (resources.files(__package__) / "data" / "raw_header_template.txt").read_text()
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("--- HDU"):
            current = []
            blocks.append(current)
        elif current is not None:
            current.append(line.ljust(80)[:80])
    phu = fits.Header.fromstring("".join(blocks[0]))
    ext = fits.Header.fromstring("".join(blocks[1]))
    return phu, ext


_TEMPLATE = None


def template() -> tuple[fits.Header, fits.Header]:
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = _template()
    return _TEMPLATE[0].copy(), _TEMPLATE[1].copy()


def _hms(hours: float, sign: bool = False) -> str:
    s = "-" if hours < 0 else ("+" if sign else "")
    h = abs(hours)
    hh, mm = int(h), int((h * 60) % 60)
    ss = (h * 3600) % 60
    return f"{s}{hh:02d}:{mm:02d}:{ss:04.1f}"


def primary_header(exp: obsplan.Exposure, layout: model.Layout, pa_header: float) -> fits.Header:
    phu, _ = template()
    cam = layout.camera
    ny, nx = cam.detset.ccd_shape
    namps = len(cam.amps) // 3
    eev = cam.name == model.DEFAULT_CAMERA
    # the real M8 header's values; other sets: a slow-read AMPINTEG by the detector table's rule
    detsize = "[1:6144,1:4644]" if eev else f"[1:{3 * nx},1:{ny}]"
    ampinteg = model.EEV_M8_HEADER["AMPINTEG"] if eev else layouts.slow_ampinteg(cam.detset)
    telescope = "Gemini-North" if cam.site == "N" else "Gemini-South"
    start = datetime.fromisoformat(exp.start)
    end = start + timedelta(seconds=exp.exptime + 0.4)
    mjd = (start - datetime(1858, 11, 17)).total_seconds() / 86400.0
    band = exp.band
    values = {
        "OBJECT": exp.object, "OBSTYPE": exp.obstype, "OBSCLASS": exp.obsclass,
        "GEMPRGID": exp.program, "OBSID": f"{exp.program}-{exp.obsid}",
        "DATALAB": f"{exp.program}-{exp.obsid}-{exp.seq:03d}", "OBSERVER": obsplan.OBSERVER,
        "SSA": "Simulated", "RA": exp.ra, "DEC": exp.dec, "ELEVATIO": exp.elevation, "AZIMUTH": exp.azimuth,
        "CRPA": (pa_header + 180.0) % 360.0 - 180.0, "HA": _hms(exp.hour_angle, sign=True),
        "LT": (start - timedelta(hours=4)).strftime("%H:%M:%S.%f")[:10],
        "UT": start.strftime("%H:%M:%S.%f")[:10], "DATE": start.strftime("%Y-%m-%d"),
        "ST": _hms(exp.lst), "TRKEPOCH": round(mjd, 6), "OBSEPOCH": 2006.0 + (start - datetime(2006, 1, 1)).days / 365.25,
        "XOFFSET": exp.poffset, "YOFFSET": exp.qoffset, "POFFSET": exp.poffset, "QOFFSET": exp.qoffset,
        "RAOFFSET": -exp.poffset, "DECOFFSE": exp.qoffset, "PA": obsplan.PA,
        "OIARA": exp.ra + 0.05, "OIADEC": exp.dec + 0.03, "OIAOBJEC": "simulated",
        "INSTRUME": cam.detset.instrument, "OBSERVAT": telescope, "TELESCOP": telescope,
        "DETECTOR": cam.detector, "DETID": cam.detid, "DETSIZE": detsize,
        "NCCDS": 3, "NAMPS": namps, "AMPINTEG": ampinteg,
        "SHUTTER": "CLOSED" if exp.obstype == "BIAS" else "OPEN",
        "DATE-OBS": start.strftime("%Y-%m-%d"), "TIME-OBS": start.strftime("%H:%M:%S.%f")[:10],
        "UTSTART": start.strftime("%H:%M:%S.%f")[:10], "UTEND": end.strftime("%H:%M:%S.%f")[:10],
        "EXPTIME": exp.exptime, "ELAPSED": exp.exptime, "DARKTIME": exp.exptime + 37.0,
        "EXPOSURE": float(round(exp.exptime)),
        "FILTER1": obsplan.FILTER1, "FILTER2": obsplan.FILTER2.get(band, "open2-8"),
        "FILTID1": 0, "FILTID2": 0, "WAVELENG": 10000.0 * instruments.filter_wavelengths().get(band, 0.65),
        "DETRO1X": 1, "DETRO1XS": 3 * nx // layout.binning, "DETRO1Y": 1, "DETRO1YS": ny // layout.binning,
        "AIRMASS": round(exp.airmass, 3), "AMSTART": round(exp.airmass, 3), "AMEND": round(exp.airmass, 3),
        "RELEASE": (start + timedelta(days=548)).strftime("%Y-%m-%d"),
        "RAWIQ": "70-percentile", "RAWCC": "50-percentile", "RAWBG": "Any", "RAWGEMQA": "USABLE",
    }
    for key, value in values.items():
        phu[key] = value
    phu["FILTID1"] = (0, "Filter 1 barcode (simulated)")
    phu["FILTID2"] = (0, "Filter 2 barcode (simulated)")
    return phu


def extension_header(amp: layouts.AmpLayout, number: int, layout: model.Layout, wcs_cards: dict, mjd: float,
                     table: instruments.Amplifier) -> fits.Header:
    """The raw header of one amplifier (``number``: its place in the file, 1-based)."""
    _, hdr = template()
    b = layout.binning
    ny, nx = layout.shape
    nxa = (amp.x2 - amp.x1) // b
    osc = model.OVERSCAN_COLUMNS
    datasec = f"[1:{nxa},1:{ny}]" if amp.overscan_right else f"[{osc + 1}:{osc + nxa},1:{ny}]"
    biassec = f"[{nxa + 1}:{nxa + osc},1:{ny}]" if amp.overscan_right else f"[1:{osc},1:{ny}]"
    ny_u, nx_u = layout.detector.ccd_shape
    x0 = (amp.ccd - 1) * nx_u + amp.x1
    cam = layout.camera
    if cam.name == model.DEFAULT_CAMERA:  # the real header's stale placeholders
        gain, rdnoise = model.EEV_M8_HEADER["GAIN"][amp.ccd - 1], model.EEV_M8_HEADER["RDNOISE"][amp.ccd - 1]
    else:
        gain, rdnoise = round(table.gain, 2), round(table.read_noise, 2)
    values = dict(wcs_cards)
    values.update({
        "MJD-OBS": mjd, "CCDNAME": layout.detector.ccd_names[amp.ccd - 1], "AMPNAME": amp.name,
        "GAIN": gain, "RDNOISE": rdnoise, "CCDSUM": f"{b} {b}", "CCDSIZE": f"[1:{nx_u},1:{ny_u}]",
        "CCDSEC": f"[{amp.x1 + 1}:{amp.x2},1:{ny_u}]", "DETSEC": f"[{x0 + 1}:{x0 + amp.x2 - amp.x1},1:{ny_u}]",
        "DATASEC": datasec, "BIASSEC": biassec, "FRAMEID": str(number - 1),
    })
    for key, value in values.items():
        hdr[key] = value
    return hdr


def raw_pixels(electrons: np.ndarray, amp: layouts.AmpLayout, table: instruments.Amplifier, bias_level: float,
               row: np.ndarray, bias2d: np.ndarray, full_well: float | None,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint16 extension (data + overscan) of one amplifier from its detected electrons (photon noise
    included; clipped at the full well where the table has one); also its saturation mask."""
    ny, nx = electrons.shape
    osc = model.OVERSCAN_COLUMNS
    rn = table.read_noise / table.gain
    if full_well is not None:
        electrons = np.minimum(electrons, full_well)
    data = electrons / table.gain + bias_level + row[:, None] + bias2d + rng.normal(0.0, rn, (ny, nx))
    over = bias_level + row[:, None] + rng.normal(0.0, rn, (ny, osc))
    right = not amp.overscan_right  # overscan on the left, data on the right
    edge = data[:, :1] if right else data[:, -1:]
    signal = np.clip(edge - bias_level, 0.0, None)
    for k, frac in enumerate(model.OVERSCAN_LEAK):
        col = osc - 1 - k if right else k
        over[:, col] += frac * signal[:, 0]
    full = np.hstack([over, data]) if right else np.hstack([data, over])
    full = np.floor(full + 0.5)
    saturated = full >= model.ADC_MAX
    if full_well is not None:
        saturated |= np.hstack([np.zeros((ny, osc), bool), electrons >= full_well] if right
                               else [electrons >= full_well, np.zeros((ny, osc), bool)])
    np.clip(full, 0, model.ADC_MAX, out=full)
    sat_data = saturated[:, osc:] if right else saturated[:, :nx]
    return full.astype(np.uint16), sat_data


def cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], seconds: float, binning: int):
    """Cosmic-ray hits: (y, x, electrons) per affected pixel; short straight tracks."""
    ny, nx = shape
    n = rng.poisson(model.COSMIC_RATE * binning**2 * seconds * ny * nx)
    ys, xs, es = [], [], []
    for _ in range(n):
        length = max(1, int(rng.exponential(4.0 / binning)))
        ang = rng.uniform(0, np.pi)
        y0, x0 = rng.uniform(0, ny), rng.uniform(0, nx)
        energy = rng.uniform(800.0, 12000.0)
        t = np.linspace(0, length, length + 1)
        py = np.clip((y0 + t * math.sin(ang)).astype(int), 0, ny - 1)
        px = np.clip((x0 + t * math.cos(ang)).astype(int), 0, nx - 1)
        ys.extend(py)
        xs.extend(px)
        es.extend([energy / len(t)] * len(t))
    return np.array(ys, dtype=np.int32), np.array(xs, dtype=np.int32), np.array(es, dtype=np.float32)
