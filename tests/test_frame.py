"""The data model: raw and processed files, compression, atomic writes, clear errors."""
import bz2
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits

from gmosred.frame import model as frame
from gmosred.errors import GmosFileError
from gmosred.frame.model import Frame, Plane


def test_read_real_raw(real_raw):
    path, pixels = real_raw
    raw = frame.read_raw(path)
    assert raw.name == "S20120922S0406"
    assert raw.binning == (2, 2) and raw.roi == "Full Frame"
    assert raw.read_speed == "slow" and raw.gain_setting == "low"  # AMPINTEG 5000, raw GAIN 2.0
    assert raw.filter == "g" and raw.obstype == "OBJECT" and raw.date == "2012-09-22"
    assert [a.ccd for a in raw.amps] == [1, 2, 3]
    for amp, expected in zip(raw.amps, pixels):
        assert amp.data.dtype == np.uint16
        np.testing.assert_array_equal(amp.data, expected)  # BZERO applied exactly, 0..65535
    a1, a3 = raw.amps[0], raw.amps[2]
    # gain and read noise come from the table, not the stale raw keywords (2.0 and 3.2)
    assert (a1.gain, a1.read_noise) == (2.372, 3.98)
    assert a1.header["GAIN"] == 2.0
    assert a1.datasec.slices == (slice(0, 2304), slice(0, 1024))
    assert a3.biassec.slices == (slice(0, 2304), slice(0, 32))
    assert a3.ampname == "EEV 8261-07-04, right" and a3.gain == 2.097
    assert raw.ccd_amps(2) == [raw.amps[1]]


def test_astropy_agrees(real_raw):
    path, _ = real_raw
    raw = frame.read_raw(path)
    with fits.open(path) as hdul:
        for amp in raw.amps:
            np.testing.assert_array_equal(amp.data, hdul[amp.index].data)


@pytest.mark.e2e
def test_compressed_formats(real_raw, tmp_path):
    path, pixels = real_raw
    bz = tmp_path / "S20120922S0406.fits.bz2"
    bz.write_bytes(bz2.compress(path.read_bytes(), 1))
    fz = tmp_path / "S20120922S0406.fits.fz"
    with fits.open(path) as hdul:
        hdus = [fits.PrimaryHDU(header=hdul[0].header)]
        hdus += [fits.CompImageHDU(h.data, header=h.header, compression_type="RICE_1") for h in hdul[1:]]
        fits.HDUList(hdus).writeto(fz)
    for p in (bz, fz):
        raw = frame.read_raw(p)
        assert raw.name == "S20120922S0406"
        for amp, expected in zip(raw.amps, pixels):
            assert amp.data.dtype == np.uint16
            np.testing.assert_array_equal(amp.data, expected)
            assert str(amp.datasec) == amp.header["DATASEC"].strip()
    from gmosred.frame.headers import scan_headers

    for p in (path, bz, fz):
        scan = scan_headers(p)
        assert scan.phu["DETID"] == "EEV2037-06-03EEV8194-19-04EEV8261-07-04" and scan.n_ext == 3
        assert scan.ext1["CCDSUM"].strip() == "2 2"


def _processed():
    rng = np.random.default_rng(1)
    phu = fits.Header({"INSTRUME": "GMOS-S", "OBJECT": "M8-1", "GIREDUCE": "2026-01-01T00:00:00"})
    planes = []
    for v in (1, 2, 3):
        hdr = fits.Header({"CCDSUM": "2 2", "GAIN": 1.0, "GAINMULT": 2.076, "CRPIX1": 512.5 + v})
        planes.append(Plane(rng.normal(100, 5, (40, 30)).astype(np.float32), hdr,
                            rng.uniform(1, 2, (40, 30)).astype(np.float32),
                            rng.integers(0, 80, (40, 30)).astype(np.uint16), v))
    return Frame(phu, planes)


def test_processed_round_trip(tmp_path):
    f = _processed()
    out = frame.write(f, tmp_path / "rgS20060910S0001.fits")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    back = frame.read(out)
    assert isinstance(back, Frame)
    assert back.phu["OBJECT"] == "M8-1" and "GEM-TLM" in back.phu
    for a, b in zip(f.planes, back.planes):
        assert b.extver == a.extver and b.header["GAINMULT"] == 2.076 and b.header["CRPIX1"] == a.header["CRPIX1"]
        assert b.sci.dtype == np.float32 and b.var.dtype == np.float32 and b.dq.dtype == np.uint16
        np.testing.assert_array_equal(a.sci, b.sci)
        np.testing.assert_array_equal(a.var, b.var)
        np.testing.assert_array_equal(a.dq, b.dq)
    with fits.open(out) as hdul:
        assert [(h.name, h.ver) for h in hdul[1:4]] == [("SCI", 1), ("VAR", 1), ("DQ", 1)]


def test_processed_lookup_by_name_in_any_order(tmp_path):
    """IRAF wrote SCI/VAR/DQ in other orders: extensions are found by (EXTNAME, EXTVER)."""
    f = _processed()
    hdul = frame.to_hdulist(f)
    shuffled = fits.HDUList([hdul[0]] + list(hdul[1:])[::-1])
    path = tmp_path / "shuffled.fits"
    shuffled.writeto(path)
    back = frame.read_processed(path)
    assert [p.extver for p in back.planes] == [1, 2, 3]
    for a, b in zip(f.planes, back.planes):
        np.testing.assert_array_equal(a.var, b.var)
    assert back.plane(2).header["CRPIX1"] == 514.5


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that dies half-way leaves neither a partial output nor a temporary file."""
    out = tmp_path / "mrgS20060910S0001.fits"
    real_write_data = frame._write_data

    def dying_write_data(f, data):
        f.write(b"\0" * 2000)
        raise KeyboardInterrupt

    monkeypatch.setattr(frame, "_write_data", dying_write_data)
    with pytest.raises(KeyboardInterrupt):
        frame.write(_processed(), out)
    assert list(tmp_path.iterdir()) == []
    # an existing good file survives a failed overwrite untouched
    monkeypatch.setattr(frame, "_write_data", real_write_data)
    frame.write(_processed(), out)
    before = out.read_bytes()
    monkeypatch.setattr(frame, "_write_data", dying_write_data)
    with pytest.raises(KeyboardInterrupt):
        frame.write(_processed(), out)
    assert out.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_stale_temporaries_of_killed_processes_are_removed(tmp_path):
    """A process killed outright leaves its temporary file; it is removed later, while the temporary files
    of live processes and of other hosts are kept."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f".rgS20060910S0001.fits.{host}-{dead}.a1b2c3d4.tmp"
    live = tmp_path / f".rgS20060910S0002.fits.{host}-{os.getpid()}.e5f6g7h8.tmp"
    remote = tmp_path / f".rgS20060910S0003.fits.elsewhere.example-{dead}.i9j0k1l2.tmp"
    for p in (stale, live, remote):
        p.write_bytes(b"SIMPLE")
    assert frame.remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, remote.name])


def test_planes_are_written_as_astropy_writes_them(tmp_path, monkeypatch):
    """The plane-by-plane writer gives the bytes of astropy's HDUList.writeto (float32 SCI/VAR, uint16
    DQ with BZERO), also bz2-compressed; a plane that fails to be made leaves no file."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    processed = _processed()
    processed.planes[0].dq[0, :3] = (0, 1, 65535)
    frame.to_hdulist(processed).writeto(tmp_path / "astropy.fits")
    want = (tmp_path / "astropy.fits").read_bytes()
    assert frame.write(processed, tmp_path / "ours.fits").read_bytes() == want
    assert bz2.decompress(frame.write(processed, tmp_path / "ours.fits.bz2").read_bytes()) == want

    def failing():
        yield processed.planes[0]
        raise GmosFileError(tmp_path / "x.fits", "cannot be read")

    with pytest.raises(GmosFileError):
        frame.write_planes(processed.phu, failing(), tmp_path / "partial.fits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astropy.fits", "ours.fits", "ours.fits.bz2"]


# ---------------------------------------------------------------- errors
def _error(path) -> str:
    with pytest.raises(GmosFileError) as e:
        frame.read_raw(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    return msg


def test_truncated_file(real_raw, tmp_path):
    path, _ = real_raw
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[: 2880 * 40 + 100000])
    assert "truncated" in _error(cut)
    header_only = tmp_path / "cut_header.fits"
    header_only.write_bytes(path.read_bytes()[:1000])
    assert "truncated: the primary header has no END card" in _error(header_only)


def test_not_fits(tmp_path):
    p = tmp_path / "notes.fits"
    p.write_text("observing notes, not an image\n" * 50)
    assert _error(p).endswith("not a FITS file")
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    assert "empty file" in _error(empty)
    bad_bz = tmp_path / "x.fits.bz2"
    bad_bz.write_bytes(b"BZh91AY&SY" + os.urandom(200))
    assert "bzip2" in _error(bad_bz)
    assert "cannot be read" in _error(tmp_path / "missing.fits")


def test_not_gmos(real_raw, tmp_path):
    path, _ = real_raw
    p = tmp_path / "other.fits"
    with fits.open(path) as hdul:
        hdul[0].header["INSTRUME"] = "F2"
        hdul.writeto(p)
    assert _error(p).endswith("not a GMOS file (INSTRUME='F2')")


@pytest.mark.parametrize("key, where", [("DATASEC", "extension 2"), ("DETID", "primary header"),
                                        ("BIASSEC", "extension 1")])
def test_missing_keyword(real_raw, tmp_path, key, where):
    path, _ = real_raw
    p = tmp_path / f"no_{key}.fits"
    with fits.open(path) as hdul:
        hdu = hdul[0] if where == "primary header" else hdul[int(where[-1])]
        del hdu.header[key]
        hdul.writeto(p)
    assert _error(p).endswith(f"{where} has no {key} keyword")


def test_bad_values(real_raw, tmp_path):
    path, _ = real_raw
    p = tmp_path / "bad.fits"
    with fits.open(path) as hdul:
        hdul[3].header["DATASEC"] = "[33:2000,1:2304]"
        hdul.writeto(p)
    assert "extension 3: DATASEC [33:2000,1:2304] lies outside the 1056x2304 image" in _error(p)
    with fits.open(path) as hdul:
        hdul[0].header["DETID"] = "EEV0000"
        hdul.writeto(p, overwrite=True)
    assert "unknown GMOS DETID 'EEV0000'" in _error(p)
    with fits.open(path) as hdul:
        hdul[2].header["AMPNAME"] = "EEV 1234, left"
        hdul.writeto(p, overwrite=True)
    assert "extension 2: unknown GMOS amplifier 'EEV 1234, left'" in _error(p)


def test_processed_is_not_raw(tmp_path):
    out = frame.write(_processed(), tmp_path / "rg.fits")
    with pytest.raises(GmosFileError, match="processed file"):
        frame.read_raw(out)


def test_cli_info_reports_and_continues(real_raw, tmp_path, capsys):
    from gmosred.cli import main

    path, _ = real_raw
    bad = tmp_path / "bad.fits"
    bad.write_text("nope")
    good = tmp_path / "good.fits"
    shutil.copy(path, good)
    assert main(["info", str(bad), str(good)]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == f"error: {bad}: not a FITS file"
    assert "raw GMOS-S OBJECT 'LMC-8' filter g, 2x2 binning, ROI Full Frame" in out
    assert "gain 2.076 e-/ADU, read noise 3.85 e-" in out
