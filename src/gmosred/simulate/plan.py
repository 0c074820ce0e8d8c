"""The observing plan of the simulated M8 run (modelled on GS-2006B-Q-18): what was taken, when, where.

The plan is pure bookkeeping (no pixels): a list of :class:`Exposure` records
in time order, from which the raw files and the truth are made.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np

OBSERVER = "Arias"
#: Centre of the M8 mosaic: RA 18:03:37, Dec -24:23:12.
M8_RA, M8_DEC = 270.904167, -24.386667
#: Pointing offsets of the three marginally overlapping fields (arcsec E, N of the centre);
#: the GMOS imaging field is 5.5 arcmin across.
POINTINGS = {"M8-1": (315.0, 0.0), "M8-2": (0.0, 0.0), "M8-3": (-315.0, 0.0)}
FILTERS = ("Ha", "HaC", "SII", "r", "i")
#: FILTER2 keyword values (name and Gemini component id).
FILTER2 = {"Ha": "Ha_G0336", "HaC": "HaC_G0337", "SII": "SII_G0335", "r": "r_G0326", "i": "i_G0327"}
FILTER1 = "open1-6"
EXPTIME = {"Ha": 120.0, "HaC": 120.0, "SII": 120.0, "r": 30.0, "i": 30.0}
#: Sky position angle (deg) of the observations.
PA = 0.0
#: Gemini South (Cerro Pachon) and North (Maunakea): latitude, longitude (deg, east positive).
SITES = {"S": (-30.2407, -70.7367), "N": (19.8238, -155.4690)}
#: Dither pattern offsets (p, q) in arcsec.
DITHERS = ((0.0, 0.0), (12.0, 9.0), (-10.0, 14.0), (9.0, -12.0), (-13.0, -8.0), (4.0, 17.0), (-6.0, -15.0))
SCIENCE_NIGHTS = ("2006-09-10", "2006-09-23", "2006-10-08")
FLAT_NIGHTS = ("2006-09-12", "2006-09-26", "2006-10-06")
BIAS_DATES = ("2006-09-05", "2006-09-15", "2006-09-27", "2006-10-14", "2006-10-27")
#: Twilight flat peak levels (e- per pixel before flat-field response) in one evening's sequence.
TWILIGHT_LEVELS = (70000.0, 50000.0, 32000.0, 20000.0)


@dataclass(frozen=True)
class RunSize:
    """How much the simulated run holds and at which binning."""

    binning: int
    dithers: int  # per pointing and filter
    flats_per_filter: int
    biases: int


SIZES = {
    "small": RunSize(binning=4, dithers=3, flats_per_filter=3, biases=5),
    "full": RunSize(binning=2, dithers=3, flats_per_filter=3, biases=10),
    # as large as the real program: 90 science frames, about 300 calibrations
    "program": RunSize(binning=2, dithers=6, flats_per_filter=20, biases=200),
}


@dataclass
class Exposure:
    """One raw frame as observed."""

    file: str
    obstype: str  # BIAS / OBJECT
    obsclass: str  # science / dayCal
    object: str
    band: str
    start: str  # ISO UT of the shutter opening
    exptime: float
    program: str
    obsid: int
    seq: int
    ra: float = 0.0  # telescope pointing (deg), including the dither offset
    dec: float = 0.0
    poffset: float = 0.0
    qoffset: float = 0.0
    airmass: float = 1.0
    elevation: float = 90.0
    azimuth: float = 0.0
    hour_angle: float = 0.0  # hours
    lst: float = 0.0  # hours
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def sidereal_time(when: datetime, site: str = "S") -> float:
    """Local apparent sidereal time (hours) at the site; GMST formula good to ~1 s here."""
    j2000 = datetime(2000, 1, 1, 12)
    days = (when - j2000).total_seconds() / 86400.0
    gmst = (280.46061837 + 360.98564736629 * days) % 360.0
    return ((gmst + SITES[site][1]) % 360.0) / 15.0


def altaz(ra: float, dec: float, when: datetime, site: str = "S") -> tuple[float, float, float, float]:
    """(elevation deg, azimuth deg, hour angle h, LST h) of (ra, dec) at the site."""
    lst = sidereal_time(when, site)
    ha = ((lst * 15.0 - ra + 180.0) % 360.0) - 180.0
    h, d, lat = map(math.radians, (ha, dec, SITES[site][0]))
    sin_alt = math.sin(d) * math.sin(lat) + math.cos(d) * math.cos(lat) * math.cos(h)
    alt = math.asin(sin_alt)
    az = math.atan2(-math.sin(h) * math.cos(d), math.sin(d) * math.cos(lat) - math.cos(d) * math.sin(lat) * math.cos(h))
    return math.degrees(alt), math.degrees(az) % 360.0, ha / 15.0, lst


def airmass(elevation: float) -> float:
    """Airmass from elevation (Hardie 1962 polynomial in sec z)."""
    secz = 1.0 / math.sin(math.radians(max(elevation, 5.0)))
    s = secz - 1.0
    return secz - 0.0018167 * s - 0.002875 * s**2 - 0.0008083 * s**3


def offset_position(ra: float, dec: float, east: float, north: float) -> tuple[float, float]:
    """Position offset by (east, north) arcsec on the sky (tangent plane)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.cdelt = [-1 / 3600.0, 1 / 3600.0]
    r, d = w.wcs_pix2world([[-east, north]], 0)[0]
    return float(r), float(d)


class _Files:
    """Archive-style file names, numbered per UT date from 0001."""

    def __init__(self, site: str = "S"):
        self.site = site
        self.count: dict[str, int] = {}

    def next(self, when: datetime) -> str:
        day = when.strftime("%Y%m%d")
        self.count[day] = self.count.get(day, 0) + 1
        return f"{self.site}{day}S{self.count[day]:04d}"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _sky_fields(exp: Exposure, when: datetime, site: str) -> None:
    exp.elevation, exp.azimuth, exp.hour_angle, exp.lst = altaz(exp.ra, exp.dec, when, site)
    exp.airmass = airmass(exp.elevation)


def program(site: str = "S", years: int = 0) -> str:
    """The run's program id at a telescope and year (the real one: GS-2006B-Q-18)."""
    return f"G{site}-{2006 + years}B-Q-18"


def _day(day: str, years: int) -> str:
    return f"{int(day[:4]) + years}{day[4:]}"


def observing_plan(size: str, rng: np.random.Generator, site: str = "S", years: int = 0) -> list[Exposure]:
    """Every exposure of the run in time order, at Gemini South or North (``site``), ``years`` after 2006."""
    spec = SIZES[size]
    files = _Files(site)
    plan: list[Exposure] = []
    prog = program(site, years)
    # biases: daytime, spread over the dates
    for n in range(spec.biases):
        day = _day(BIAS_DATES[n % len(BIAS_DATES)], years)
        k = n // len(BIAS_DATES)
        when = datetime.fromisoformat(day) + timedelta(hours=17, seconds=45 * k)
        cal = f"G{site}-CAL{day.replace('-', '')}"
        plan.append(Exposure(files.next(when), "BIAS", "dayCal", "Bias", "", _stamp(when), 0.0, cal, 1, k + 1,
                             ra=M8_RA, dec=M8_DEC))
    # twilight flats: evening sequences of falling sky level, each filter on the flat nights
    for i, band in enumerate(FILTERS):
        for n in range(spec.flats_per_filter):
            day = _day(FLAT_NIGHTS[(n + i) % len(FLAT_NIGHTS)], years)
            when = datetime.fromisoformat(day) + timedelta(hours=23, minutes=4 * i, seconds=40 * n)
            level = TWILIGHT_LEVELS[n % len(TWILIGHT_LEVELS)] * rng.uniform(0.9, 1.1)
            cal = f"G{site}-CAL{day.replace('-', '')}"
            ra, dec = offset_position(M8_RA + 40.0, -30.0, rng.uniform(-60, 60), rng.uniform(-60, 60))
            exp = Exposure(files.next(when), "OBJECT", "dayCal", "Twilight", band, _stamp(when),
                           float(rng.choice([1.0, 2.0, 3.0, 5.0])), cal, 2 + i, n + 1, ra=ra, dec=dec)
            exp.extra["twilight_level_e"] = float(level)
            # twilight sky gradient across the field: a few tenths of a percent per 165 arcsec
            exp.extra["gradient"] = [float(g) for g in rng.normal(0.0, 0.002, 2)]
            _sky_fields(exp, when, site)
            plan.append(exp)
    # science: one night per pointing, all filters, dithered
    for p, (name, (east, north)) in enumerate(POINTINGS.items()):
        night = datetime.fromisoformat(_day(SCIENCE_NIGHTS[p % len(SCIENCE_NIGHTS)], years)) + timedelta(minutes=40)
        if site == "N":  # M8 transits about 6 h later in UT at Maunakea
            night += timedelta(hours=6)
        base_ra, base_dec = offset_position(M8_RA, M8_DEC, east, north)
        when = night
        for f, band in enumerate(FILTERS):
            for d in range(spec.dithers):
                dp, dq = DITHERS[d % len(DITHERS)]
                dp += 20.0 * (d // len(DITHERS))
                # PA = 0: p points East... q North; the offsets are applied on the sky
                ra, dec = offset_position(base_ra, base_dec, -dp, dq)
                exp = Exposure(files.next(when), "OBJECT", "science", name, band, _stamp(when), EXPTIME[band],
                               prog, 10 * (p + 1) + f, d + 1, ra=ra, dec=dec, poffset=dp, qoffset=dq)
                _sky_fields(exp, when + timedelta(seconds=EXPTIME[band] / 2), site)
                plan.append(exp)
                when += timedelta(seconds=EXPTIME[band] + 35.0)
            when += timedelta(seconds=120.0)
    plan.sort(key=lambda e: e.start)
    return plan
