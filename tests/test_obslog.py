"""The observing log and file selection: cookbook compatibility, incremental updates, robustness."""
import bz2
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gmosred.errors import GmosredError
from astropy.io import fits

from gmosred.obslog import index as obslog, select
from gmosred.cli import main

COOKBOOK_BIAS = """SELECT file FROM obslog WHERE
    use_me=1 AND ObsType='BIAS' AND ObsClass LIKE '%Cal'
    AND Instrument=:Instrument AND RoI=:RoI AND CcdBin=:CcdBin
    """
COOKBOOK_TWIFLAT = """SELECT file FROM obslog WHERE
    use_me=1 AND ObsClass='dayCal' AND Object='Twilight'
    AND Instrument=:Instrument AND RoI=:RoI AND CcdBin=:CcdBin
    AND Disperser='MIRROR' AND AperMask="None" AND Filter2 LIKE :Filter2
    """
COOKBOOK_SCIIMG = """SELECT file FROM obslog WHERE
    use_me=1 AND ObsType='OBJECT' AND ObsClass='science' AND Object LIKE :Object
    AND Instrument=:Instrument AND RoI=:RoI AND CcdBin=:CcdBin
    AND Disperser='MIRROR' AND AperMask='None' AND Filter2 LIKE :Filter2
    """
QD = {"use_me": 1, "Instrument": "GMOS-S", "CcdBin": "4 4", "RoI": "Full", "Object": "M8-%"}


@pytest.fixture(scope="module")
def log(small_run, tmp_path_factory):
    out, truth = small_run
    db = tmp_path_factory.mktemp("log") / "obsLog.sqlite3"
    s = obslog.build(out / "raw", db, show_progress=False)
    assert len(s.added) == 65 and not s.rejected
    return db, truth, out


def _files(truth, **match):
    return sorted(r["file"] for r in truth.frames if all(r[k] == v for k, v in match.items()))


def test_columns_follow_headers(log):
    db, truth, out = log
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    for rec in (truth.frames[0], truth.frames[10], truth.frames[-1]):
        row = con.execute("SELECT * FROM obslog WHERE File=?", (rec["file"] + ".fits",)).fetchone()
        with fits.open(out / "raw" / f"{rec['file']}.fits") as h:
            phu = h[0].header
            assert row["N_ext"] == len(h) - 1 == 3
        assert row["use_me"] == 1
        assert (row["DateObs"], row["TimeObs"]) == (phu["DATE-OBS"], phu["TIME-OBS"])
        assert (row["Instrument"], row["Object"], row["ObsType"], row["ObsClass"]) == (
            "GMOS-S", rec["object"], rec["obstype"], rec["obsclass"])
        assert row["RA"] == pytest.approx(phu["RA"], abs=1e-8) and row["Dec"] == pytest.approx(phu["DEC"], abs=1e-8)
        assert (row["CcdBin"], row["RoI"], row["RoIName"], row["XBin"], row["YBin"]) == ("4 4", "Full", "Full Frame", 4, 4)
        assert (row["Filter1"], row["Filter2"]) == (phu["FILTER1"], phu["FILTER2"])
        assert (row["Disperser"], row["AperMask"], row["MaskType"]) == ("MIRROR", "None", "None")
        assert row["T_exp"] == round(phu["EXPTIME"], 2) and row["Airmass"] == round(phu["AIRMASS"], 2)
        assert row["Rotator"] == phu["PA"] and row["CentWave"] == 0.0
        assert row["DTA_Xoffset"] == round(phu["DTAX"] / 13.5, 3)
        assert (row["NodMode"], row["NS_Shift"], row["NS_Cycles"]) == ("NONE", 0, 0)
        assert (row["DataLabel"], row["ProgramID"], row["DetID"]) == (phu["DATALAB"], phu["GEMPRGID"], phu["DETID"])
        assert (row["ReadSpeed"], row["GainSetting"]) == ("slow", "low")
        assert row["DateTime"] == f"{phu['DATE-OBS']}T{phu['TIME-OBS']}"
        assert len(row["Checksum"]) == 32 and row["FileSize"] == (out / "raw" / f"{rec['file']}.fits").stat().st_size
    types = {r[1]: r[2] for r in con.execute("PRAGMA table_info(obslog)")}
    assert types["obs_id"] == "INTEGER" and types["T_exp"] == "REAL" and types["CcdBin"] == "TEXT"
    con.close()


def test_real_header_row(real_raw):
    from gmosred.frame.headers import scan_headers

    path, _ = real_raw
    row = obslog.row_from_headers(scan_headers(path))
    assert (row["File"], row["Object"], row["CcdBin"], row["RoI"], row["T_exp"]) == (
        "S20120922S0406.fits", "LMC-8", "2 2", "Full", 30.5)
    assert row["DTA_Xoffset"] == round(54.4 / 13.5, 3) and row["Rotator"] == 328.0 and row["Airmass"] == 1.3


def test_cookbook_sql_unchanged(log):
    """The cookbook's own templates, run with plain sqlite3, return the expected files."""
    db, truth, out = log
    con = sqlite3.connect(db)

    def run(sql, qd, dates):
        qd = dict(qd)
        d1, d2 = dates.split(":")
        qd["date1"], qd["date2"] = d1, d2
        return sorted(r[0].split(".fits")[0] for r in con.execute(sql + " AND DateObs>=:date1 AND DateObs <=:date2", qd))

    assert run(COOKBOOK_BIAS, QD, "2006-09-01:2006-10-30") == _files(truth, kind="bias")
    for band in ("Ha", "HaC", "r"):
        qd = dict(QD, Filter2=band + "_G%")
        assert run(COOKBOOK_TWIFLAT, qd, "2006-09-10:2006-10-10") == _files(truth, kind="twilight", band=band)
        assert run(COOKBOOK_SCIIMG, qd, "2006-09-01:2006-10-30") == _files(truth, kind="science", band=band)
    con.close()


def test_selection_api_and_like(log):
    db, truth, out = log
    ha = [r["File"] for r in select.select(db, "sciImg", Filter2="Ha", Object="M8-%", Instrument="GMOS-S")]
    assert [f[:-5] for f in ha] == _files(truth, kind="science", band="Ha")
    assert all(r["band"] == "Ha" for r in truth.frames if r["file"] + ".fits" in ha)  # Ha_G% is not HaC
    hac = select.select(db, "sciImg", Filter2="HaC")
    assert len(hac) == 9 and not set(ha) & {r["File"] for r in hac}
    one = select.select(db, "sciImg", Object="M8-2", Filter2="i")
    assert [r["File"][:-5] for r in one] == _files(truth, kind="science", band="i", object="M8-2")


def test_date_ranges_inclusive(log):
    db, truth, out = log
    biases = {r["start"][:10]: r["file"] for r in truth.frames if r["kind"] == "bias"}
    first, *_, last = sorted(biases)
    got = [r["File"][:-5] for r in select.select(db, "bias", DateObs=f"{first}:{last}")]
    assert got == sorted(biases.values())
    assert [r["File"][:-5] for r in select.select(db, "bias", DateObs=first)] == [biases[first]]
    assert len(select.select(db, "bias", DateObs="2006-09-*")) == sum(d.startswith("2006-09") for d in biases)
    assert select.select(db, "bias", DateObs="2006-11-01:2006-12-01") == []


@pytest.mark.parametrize("option", ["Instrument", "RoI", "CcdBin", "Filter2", "Object", "DateObs"])
def test_injection_is_harmless(log, option):
    db, truth, out = log
    for evil in ("x' OR '1'='1", "'; DROP TABLE obslog; --", "%' OR 1=1 --", "2006-09-01:2006' OR '1'='1"):
        if option == "DateObs":  # not a date selection: refused before any query
            with pytest.raises(GmosredError, match="date selection"):
                select.select(db, "sciImg", DateObs=evil)
            continue
        assert select.select(db, "sciImg", **{option: evil}) == []
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM obslog").fetchone()[0] == 65
    con.close()


def test_empty_selection_says_why(log, capsys):
    db, truth, out = log
    assert main(["select", "bias", "--db", str(db), "--bin", "1 1"]) == 1
    err = capsys.readouterr().err
    assert "none has CcdBin='1 1'" in err and "CcdBin values there: '4 4'" in err
    assert main(["select", "sciImg", "--db", str(db), "--filter", "z"]) == 1
    assert "none has Filter2 LIKE 'z_G%'" in capsys.readouterr().err
    with pytest.raises(Exception, match="not selected by Object"):
        select.select(db, "bias", Object="M8-1")


def test_cli_outputs(log, tmp_path, capsys):
    db, truth, out = log
    assert main(["select", "twiFlat", "--db", str(db), "--filter", "SII", "--dates", "2006-09-10:2006-10-10"]) == 0
    assert capsys.readouterr().out.split() == _files(truth, kind="twilight", band="SII")
    assert main(["select", "bias", "--db", str(db), "--paths"]) == 0
    paths = capsys.readouterr().out.split()
    assert all(p.startswith("/") and p.endswith(".fits") for p in paths) and len(paths) == 5
    at = tmp_path / "biases.lis"
    assert main(["select", "bias", "--db", str(db), "--at-list", str(at)]) == 0
    listed = at.read_text().split()  # paths, without --paths too: `gmosred flat @list` reads them from anywhere
    assert listed == paths and [Path(p).stem for p in listed] == _files(truth, kind="bias")
    assert main(["obslog", "show", str(out / "raw"), "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "Twilight" in text and "M8-3" in text and "i_G0327" in text


# ---------------------------------------------------------------- incremental behaviour, bad files
@pytest.fixture
def rawdir(small_run, tmp_path):
    out, truth = small_run
    d = tmp_path / "raw"
    d.mkdir()
    for rec in truth.frames[:6] + truth.frames[-6:]:
        shutil.copy2(out / "raw" / f"{rec['file']}.fits", d)
    return d


def test_incremental_and_use_me(rawdir, tmp_path):
    db = rawdir / "obsLog.sqlite3"
    names = sorted(p.name for p in rawdir.glob("*.fits"))
    s = obslog.build(rawdir, jobs=1, show_progress=False)
    assert len(s.added) == 12
    assert obslog.set_use(db, [names[0], names[1][:-5], "S20990101S0001"], False) == ["S20990101S0001"]
    # unchanged files are not re-read; a touched file with the same content stays as it is
    (rawdir / names[2]).touch()
    s = obslog.build(rawdir, jobs=1, show_progress=False)
    assert (s.added, s.updated, s.removed, s.unchanged) == ([], [], [], 12)
    # a changed header is refreshed, a deleted file dropped, a new one added; use_me choices kept
    with fits.open(rawdir / names[0], mode="update") as h:
        h[0].header["OBJECT"] = "M8-renamed"
    (rawdir / names[3]).unlink()
    shutil.copy(rawdir / names[4], rawdir / "S20061231S0001.fits")
    s = obslog.build(rawdir, jobs=1, show_progress=False)
    assert s.updated == [names[0]] and s.removed == [names[3]] and s.added == ["S20061231S0001.fits"]
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT File, use_me FROM obslog"))
    assert rows[names[0]] == 0 and rows[names[1]] == 0 and rows[names[2]] == 1
    assert con.execute("SELECT Object FROM obslog WHERE File=?", (names[0],)).fetchone()[0] == "M8-renamed"
    con.close()
    # a full rebuild keeps the use_me choices too
    s = obslog.build(rawdir, rebuild=True, jobs=1, show_progress=False)
    assert len(s.added) == 12
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT File, use_me FROM obslog"))[names[1]] == 0
    con.close()
    assert main(["obslog", "use", str(rawdir), names[1], "--yes"]) == 0
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT File, use_me FROM obslog"))[names[1]] == 1
    con.close()


def test_bad_files_rejected_others_indexed(rawdir, capsys):
    good = sorted(rawdir.glob("*.fits"))
    (rawdir / "S20060901S0100.fits").write_bytes(good[0].read_bytes()[:200000])  # truncated
    (rawdir / "S20060901S0101.fits").write_text("not a fits file at all\n" * 100)
    with fits.open(good[1]) as h:
        h[0].header["INSTRUME"] = "GNIRS"
        h.writeto(rawdir / "S20060901S0102.fits")
        h[0].header["INSTRUME"] = "GMOS-S"
        del h[0].header["DATE-OBS"]
        h.writeto(rawdir / "S20060901S0103.fits")
        h[0].header["DATE-OBS"] = "2006-09-01"
        del h[0].header["OBSTYPE"]
        h.writeto(rawdir / "S20060901S0104.fits")
        h[0].header["OBSTYPE"] = "OBJECT"
        h[0].header["OBJECT"] = "Focus"
        h.writeto(rawdir / "S20060901S0105.fits")
    (rawdir / "S20060901S0106.fits.bz2").write_bytes(bz2.compress(good[2].read_bytes())[:50000])
    (rawdir / (good[3].name + ".bz2")).write_bytes(bz2.compress(good[3].read_bytes(), 1))  # a second form
    assert main(["obslog", str(rawdir), "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    reasons = {line.split(": ")[1].split("/")[-1]: line for line in err}
    assert "truncated" in reasons["S20060901S0100.fits"]
    assert "not a FITS file" in reasons["S20060901S0101.fits"]
    assert "not a GMOS file (INSTRUME='GNIRS')" in reasons["S20060901S0102.fits"]
    assert "no DATE-OBS keyword" in reasons["S20060901S0103.fits"]
    assert "no OBSTYPE keyword" in reasons["S20060901S0104.fits"]
    assert "bzip2" in reasons["S20060901S0106.fits.bz2"] or "truncated" in reasons["S20060901S0106.fits.bz2"]
    assert "another form of " + good[3].name in reasons[good[3].name + ".bz2"]
    assert len(err) == 7 and all(line.startswith("rejected: ") for line in err)
    assert "12 added" in captured.out and "7 rejected" in captured.out
    con = sqlite3.connect(rawdir / "obsLog.sqlite3")
    files = {r[0] for r in con.execute("SELECT File FROM obslog")}
    assert files == {p.name for p in good}  # the focus frame is skipped, the good ones indexed
    assert con.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] == 7
    con.close()
    assert main(["obslog", str(rawdir), "--focus", "--rebuild", "--jobs", "1"]) == 0
    con = sqlite3.connect(rawdir / "obsLog.sqlite3")
    assert con.execute("SELECT COUNT(*) FROM obslog WHERE Object='Focus'").fetchone()[0] == 1
    con.close()


def test_compressed_forms_indexed(rawdir):
    files = sorted(rawdir.glob("*.fits"))
    bz = files[0].with_name(files[0].name + ".bz2")
    bz.write_bytes(bz2.compress(files[0].read_bytes(), 1))
    files[0].unlink()
    with fits.open(files[1]) as h:
        fz = [fits.PrimaryHDU(header=h[0].header)] + [fits.CompImageHDU(x.data, x.header) for x in h[1:]]
        fits.HDUList(fz).writeto(files[1].with_name(files[1].name + ".fz"))
    files[1].unlink()
    s = obslog.build(rawdir, jobs=1, show_progress=False)
    assert not s.rejected and len(s.added) == 12
    con = sqlite3.connect(rawdir / "obsLog.sqlite3")
    row = con.execute("SELECT N_ext, Path, CcdBin FROM obslog WHERE File=?", (files[0].name,)).fetchone()
    assert row[0] == 3 and row[1].endswith(".fits.bz2") and row[2] == "4 4"
    assert con.execute("SELECT N_ext FROM obslog WHERE File=?", (files[1].name,)).fetchone()[0] == 3
    con.close()


def test_cookbook_made_log_is_upgraded(rawdir):
    db = rawdir / "obsLog.sqlite3"
    con = sqlite3.connect(db)
    cols = ", ".join(f'"{n}" {t}' for n, t in obslog.COOKBOOK_COLUMNS)
    con.execute(f"CREATE TABLE obslog ({cols})")
    con.commit()
    con.close()
    s = obslog.build(rawdir, jobs=1, show_progress=False)
    assert len(s.added) == 12


def test_two_processes_at_once(rawdir):
    """Two indexers on the same folder and log: every file exactly once, log intact."""
    cmd = [sys.executable, "-m", "gmosred", "obslog", str(rawdir), "--jobs", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    con = sqlite3.connect(rawdir / "obsLog.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT File) FROM obslog").fetchone() == (12, 12)
    con.close()
