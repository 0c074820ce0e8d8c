"""Fault injection, property-based: a raw frame broken at random (header keywords removed, of the wrong
type or absurd, sections outside the image, truncated anywhere, random bytes anywhere) goes through
`info`, `obslog`, `reduce` and `mosaic`. Each command ends with an exit code and at most one line per
problem, never a traceback; the broken file is byte-identical afterwards and the masters made earlier
are intact. A few examples in the quick tier, many more in the e2e tier."""
import os
import shutil

import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmosred.cli import main

#: Keywords the reduction reads: (HDU, keyword); 1 stands for every amplifier extension's own.
KEYWORDS = [(0, k) for k in ("INSTRUME", "OBSTYPE", "OBSCLASS", "DATE-OBS", "TIME-OBS", "DETID", "AMPINTEG",
                              "FILTER1", "FILTER2", "EXPTIME", "CCDSUM", "DETRO1X", "DETRO1XS", "DETRO1YS",
                              "NAXIS", "BITPIX", "EXTEND", "RA", "DEC", "AIRMASS")] + \
           [(1, k) for k in ("DATASEC", "BIASSEC", "DETSEC", "CCDSEC", "CCDSUM", "CCDSIZE", "GAIN", "RDNOISE",
                             "CCDNAME", "AMPNAME", "NAXIS1", "NAXIS2", "BITPIX", "BZERO", "XTENSION", "CRPIX1",
                             "CD1_1", "MJD-OBS", "EXTNAME", "EXTVER")]
VALUES = st.one_of(
    st.none(),  # the keyword removed (its card blanked)
    st.sampled_from(["abc", "", "[0:0,1:1]", "[1:99999,1:99999]", "[600:1,1:1152]", "[1:512]", "[-5:3,2:1]",
                     "1 1", "0 0", "-4 2", "GMOS-X", "2006-13-45"]),
    st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True), st.booleans())

MUTATIONS = st.one_of(
    st.tuples(st.just("keyword"), st.sampled_from(KEYWORDS), st.integers(1, 3), VALUES),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("bytes"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64)))


def _card_offset(data: bytes, hdu: int, key: str) -> int | None:
    """The byte offset of ``key``'s card in HDU ``hdu`` of a FITS file's bytes (None if it has none)."""
    pos = 0
    for n in range(hdu + 1):
        cards = range(pos, len(data) - 79, 80)
        end = next((c for c in cards if data[c:c + 8] == b"END     "), None)
        if end is None:
            return None
        if n == hdu:
            return next((c for c in range(pos, end, 80) if data[c:c + 8].rstrip() == key.encode()), None)
        header = fits.Header.fromstring(data[pos:end + 80].decode("ascii", "replace"))
        size = abs(header["BITPIX"]) // 8 if header["NAXIS"] else 0
        for k in range(1, header["NAXIS"] + 1):
            size *= header[f"NAXIS{k}"]
        pos = -(-(end + 80) // 2880) * 2880 + -(-size // 2880) * 2880
    return None


def break_file(good: bytes, mutation) -> bytes:
    data = bytearray(good)
    kind = mutation[0]
    if kind == "truncate":
        return bytes(data[:int(mutation[1] * len(data))])
    if kind == "bytes":
        at = int(mutation[1] * len(data))
        data[at:at + len(mutation[2])] = mutation[2]
        return bytes(data[:len(good)])
    (hdu, key), ext, value = mutation[1], mutation[2], mutation[3]
    at = _card_offset(good, hdu and ext, key)
    if at is None:
        return good
    try:
        card = b" " * 80 if value is None else fits.Card(key, value).image.encode("ascii")
    except (ValueError, TypeError):
        card = f"{key:8s}= {value!r}"[:80].ljust(80).encode("ascii", "replace")
    data[at:at + 80] = card[:80]
    return bytes(data)


@pytest.fixture(scope="module")
def setting(small_run, tmp_path_factory):
    """One raw science frame and the masters it needs (made by the pipeline from the simulated run)."""
    out, truth = small_run
    d = tmp_path_factory.mktemp("faults")
    raw = d / "raw"
    raw.mkdir()
    sci = next(r for r in truth.frames if r["kind"] == "science" and r["band"] == "r")
    for r in truth.frames:
        if r["kind"] == "bias" or (r["kind"] == "twilight" and r["band"] == "r"):
            os.symlink(out / "raw" / f"{r['file']}.fits", raw / f"{r['file']}.fits")
    shutil.copy(out / "raw" / f"{sci['file']}.fits", raw / f"{sci['file']}.fits")
    work = d / "work"
    os.environ.setdefault("GMOSRED_NO_PROGRESS", "1")
    assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"]) == 0
    masters = {p.name: p.read_bytes() for p in work.glob("MC*.fits")}
    return Setting((raw / f"{sci['file']}.fits").read_bytes(), sci["file"], work, masters)


class Setting(tuple):
    """(raw bytes, frame name, work folder, {master: bytes}), shown briefly in hypothesis' reports."""

    def __new__(cls, *items):
        return super().__new__(cls, items)

    def __repr__(self) -> str:
        return f"Setting({self[1]})"


def _commands(setting, tmp_path, mutation, capsys):
    good, name, work, masters = setting
    broken = break_file(good, mutation)
    folder = tmp_path / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / f"{name}.fits"
    path.write_bytes(broken)
    out = tmp_path / "out"
    codes = [main(["info", str(path)]), main(["obslog", str(folder)])]
    codes.append(main(["reduce", str(path), "--bias", str(work / "MCbias.fits"), "--flat",
                       str(work / "MCflat_r.fits"), "--outdir", str(out), "--jobs", "1"]))
    rg = out / f"rg{name}.fits"
    if codes[-1] == 0 and rg.exists():
        codes.append(main(["mosaic", str(rg), "--outdir", str(out), "--jobs", "1"]))
    err = capsys.readouterr().err
    assert all(c in (0, 1, 2) for c in codes), codes
    assert "Traceback" not in err, err
    for line in err.splitlines():  # each problem a line that names the file, or a count of them
        assert line.startswith(("gmosred: ", "error: ", "rejected: ")), line
    assert path.read_bytes() == broken  # the input is never changed
    assert {p.name: p.read_bytes() for p in work.glob("MC*.fits")} == masters
    return codes


SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(max_examples=12, **SETTINGS)
@given(mutation=MUTATIONS)
def test_broken_raw_frames_quick(setting, tmp_path, capsys, mutation):
    _commands(setting, tmp_path, mutation, capsys)


@pytest.mark.e2e
@settings(max_examples=150, **SETTINGS)
@given(mutation=MUTATIONS)
def test_broken_raw_frames(setting, tmp_path, capsys, mutation):
    _commands(setting, tmp_path, mutation, capsys)


def test_the_mutations_do_break_files(setting):
    """The injector hits what it aims at: a removed DATASEC is gone, a truncation shortens, bytes land."""
    good = setting[0]
    gone = break_file(good, ("keyword", (1, "DATASEC"), 2, None))
    import io

    with fits.open(io.BytesIO(gone)) as h:
        assert "DATASEC" not in h[2].header and "DATASEC" in h[1].header
    odd = break_file(good, ("keyword", (0, "DETID"), 1, 7))
    with fits.open(io.BytesIO(odd)) as h:
        assert h[0].header["DETID"] == 7
    assert len(break_file(good, ("truncate", 0.5))) == len(good) // 2
    assert break_file(good, ("bytes", 0.0, b"XYZ"))[:3] == b"XYZ"
