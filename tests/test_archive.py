"""gmosred download against a local archive stand-in serving simulated files (no internet)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import date, datetime
from pathlib import Path

import pytest

from gmosred import archive
from gmosred.obslog import index as obslog
from gmosred.archive import associate
from gmosred.archive.client import ArchiveFile
from gmosred.cli import main
from gmosred.errors import GmosredError
from gmosred.simulate.archive import StandInArchive

PROGRAM = "GS-2006B-Q-18"
TOKEN = "pi-session-cookie"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def served(small_run):
    """A stand-in archive holding part of the simulated run: M8-1 in r and i, M8-2 in r, all biases,
    the r and i twilight flats; one bias is proprietary."""
    out, truth = small_run
    raw = out / "raw"
    keep = [e for e in truth.frames
            if e["obstype"] == "BIAS"
            or (e["object"] == "Twilight" and e["band"] in ("r", "i"))
            or (e["object"] == "M8-1" and e["band"] in ("r", "i"))
            or (e["object"] == "M8-2" and e["band"] == "r")]
    biases = sorted(e["file"] + ".fits" for e in truth.frames if e["obstype"] == "BIAS")
    stand_in = StandInArchive([raw / (e["file"] + ".fits") for e in keep], proprietary=[biases[-1]], token=TOKEN)
    with stand_in:
        yield stand_in, raw, truth, biases[-1]


@pytest.fixture
def server(served):
    stand_in = served[0]
    stand_in.log.clear()
    stand_in.cut_after.clear()
    stand_in.corrupt.clear()
    stand_in.unavailable.clear()
    stand_in.rate = None
    stand_in.ranges = True
    return served


def _expected(truth, obj="M8-1", band="r"):
    science = {e["file"] + ".fits" for e in truth.frames if e["object"] == obj and e["band"] == band}
    flats = {e["file"] + ".fits" for e in truth.frames if e["object"] == "Twilight" and e["band"] == band}
    biases = {e["file"] + ".fits" for e in truth.frames if e["obstype"] == "BIAS"}
    return science, flats, biases


def test_recorded_archive_listing_parses():
    """A real recorded jsonsummary answer (astroquery's test data) becomes typed records."""
    import astroquery
    from astroquery.gemini.core import _gemini_json_to_table

    path = Path(astroquery.__file__).parent / "gemini" / "tests" / "data" / "m101.json"
    if not path.exists():
        pytest.skip("astroquery's recorded Gemini listing is not installed")
    records = json.loads(path.read_text())
    table = _gemini_json_to_table(records)
    files = [ArchiveFile.from_record(row) for row in table]
    assert len(files) == len(records)
    for f, rec in zip(files, records):
        assert f.filename == rec["filename"] and f.name == rec["name"]
        assert f.file_size == rec["file_size"] and f.data_size == rec["data_size"]
        assert f.file_md5 == rec["file_md5"] and f.data_md5 == rec["data_md5"]
        assert f.compressed is rec["compressed"]
        assert f.binning == rec["detector_binning"]
        assert f.ut_datetime == datetime.fromisoformat(rec["ut_datetime"])
        assert f.release == date.fromisoformat(rec["release"])
    first = files[0]
    assert first.band == "g" and first.kind == "science" and first.instrument == "GMOS-N"


def test_selection_with_associated_calibrations(server):
    stand_in, raw, truth, _ = server
    sel = archive.select(archive.Archive(stand_in.url), PROGRAM, filters=("r",), obj="M8-1", calibrations=True)
    science, flats, biases = _expected(truth)
    names = {f.name for f in sel.files.values()}
    assert names == science | flats | biases  # no i frames or flats, no M8-2, nothing else
    assert {f.name for f in sel.files.values() if f.kind == "science"} == science
    assert {f.name for f in sel.files.values() if f.kind == "twilight flat"} == flats
    assert any("standard" in n for n in sel.notes)  # the run has no standards: said so
    nothing = archive.select(archive.Archive(stand_in.url), PROGRAM, filters=("z",), obj="M8-1")
    assert not nothing.files and nothing.notes == [
        f"none of the {len(science) * 2} raw files of {PROGRAM} has filter z and object 'M8-1'"]
    # the program without criteria: every science frame it has on the stand-in, no calibrations
    everything = archive.select(archive.Archive(stand_in.url), PROGRAM)
    assert {f.name for f in everything.files.values()} == {
        e["file"] + ".fits" for e in truth.frames
        if (e["object"] == "M8-1" and e["band"] in ("r", "i")) or (e["object"] == "M8-2" and e["band"] == "r")}


def _record(name, when, **changes) -> ArchiveFile:
    rec = {"filename": name + ".bz2", "name": name, "file_size": 10, "file_md5": "", "data_size": 20,
           "data_md5": "", "compressed": True, "program_id": "GS-CAL", "data_label": name, "instrument": "GMOS-S",
           "ut_datetime": when, "observation_type": "BIAS", "observation_class": "dayCal", "object": "Bias",
           "filter_name": "open", "detector_binning": "2x2", "detector_roi_setting": "Full Frame",
           "detector_readspeed_setting": "slow", "detector_gain_setting": "low", "focal_plane_mask": "Imaging",
           "exposure_time": 0.0, "qa_state": "Pass", "release": "2007-01-01", "phot_standard": None}
    rec.update(changes)
    return ArchiveFile.from_record(rec)


class _FakeArchive:
    def __init__(self, files):
        self.files = files
        self.searches = []

    def search(self, *terms, **criteria):
        self.searches.append((terms, criteria))
        return self.files


def test_association_rules_nearest_within_window_same_setup():
    """The archive's GMOS bias rule: same binning/read speed/gain/ROI, within 90 days, the 50 nearest."""
    science = _record("S20061001S0100.fits", "2006-10-01 03:00:00", observation_type="OBJECT",
                      observation_class="science", object="M8", filter_name="r", program_id="GS-2006B-Q-18")
    good = [_record(f"S2006{m:02d}{d:02d}S0001.fits", f"2006-{m:02d}-{d:02d} 17:00:00")
            for m in (7, 8, 9, 10, 11, 12) for d in range(1, 29)]
    fast = _record("S20061001S0002.fits", "2006-10-01 17:00:00", detector_readspeed_setting="fast")
    binned = _record("S20061001S0003.fits", "2006-10-01 17:10:00", detector_binning="1x1")
    roi = _record("S20061001S0004.fits", "2006-10-01 17:20:00", detector_roi_setting="Central Spectrum")
    fake = _FakeArchive(good + [fast, binned, roi])
    rule = next(r for r in associate.rules() if r.kind == "bias")
    sel = associate.Selection()
    associate.associate(fake, [science], rule, sel)
    chosen = list(sel.files.values())
    assert len(chosen) == rule.how_many == 50
    assert not {fast.name, binned.name, roi.name} & {c.name for c in chosen}
    gaps = sorted(abs(c.ut_datetime - science.ut_datetime).days for c in chosen)
    rest = sorted(abs(c.ut_datetime - science.ut_datetime).days for c in good if c not in chosen)
    assert gaps[-1] <= rest[0] and gaps[-1] <= 90  # the nearest ones, inside the window
    terms, criteria = fake.searches[0]
    assert terms == ("2x2",) and criteria["observation_type"] == "BIAS" and criteria["instrument"] == "GMOS-S"
    first, last = criteria["utc_date"]
    assert (science.ut_datetime.date() - first).days == 90 and (last - science.ut_datetime.date()).days == 90
    # an acquisition needs no bias; a bias frame needs none either
    assert not associate.needs(_record("a.fits", "2006-10-01 01:00:00", observation_type="OBJECT",
                                       observation_class="acq"), "bias")
    assert not associate.needs(good[0], "bias") and associate.needs(science, "twilight flat")
    # filters are matched by band: Ha is not HaC, and the archive's old 'r_G0326' style is r
    assert _record("x.fits", "2006-10-01 01:00:00", filter_name="HaC").bands == ["HaC"]
    assert _record("x.fits", "2006-10-01 01:00:00", filter_name="r_G0326&open2-8").band == "r"


def _run(stand_in, rawdir, *extra) -> int:
    return main(["download", PROGRAM, "--raw", str(rawdir), "--archive", stand_in.url, "--calibrations",
                 "--filter", "r", "--object", "M8-1", *extra])


@pytest.mark.e2e
def test_download_decompress_index_and_rerun(server, tmp_path, capsys):
    stand_in, raw, truth, private = server
    rawdir = tmp_path / "raw"
    assert _run(stand_in, rawdir) == 1  # one proprietary bias: reported, the rest arrive
    out, err = capsys.readouterr()
    science, flats, biases = _expected(truth)
    wanted = science | flats | biases
    assert "twilight flat" in out and "science" in out and "MB" in out
    assert err.count(private) == 1 and "HTTP 403" in err and "proprietary until" in err
    arrived = {p.name for p in rawdir.glob("*.fits")}
    assert arrived == wanted - {private}
    for name in arrived:  # the simulator's raw files, byte for byte
        assert _md5((rawdir / name).read_bytes()) == _md5((raw / name).read_bytes())
    assert not list(rawdir.glob("*.bz2")) and not (rawdir / ".partial").exists()
    con = obslog.connect(obslog.default_db(rawdir))
    assert {r["File"] for r in con.execute("SELECT File FROM obslog")} == arrived
    con.close()
    # a second run fetches nothing that is already there (only the refused file is asked for again)
    stand_in.log.clear()
    assert _run(stand_in, rawdir) == 1
    assert [name for name, _ in stand_in.file_requests()] == [private + ".bz2"]


def test_dry_run_fetches_nothing(server, tmp_path, capsys):
    stand_in, raw, truth, _ = server
    assert _run(stand_in, tmp_path / "raw", "--dry-run") == 0
    out = capsys.readouterr().out
    science, flats, biases = _expected(truth)
    for name in science | flats | biases:
        assert name + ".bz2" in out
    assert "to fetch" in out and f"{len(science | flats | biases)} files" in out
    assert stand_in.file_requests() == [] and not (tmp_path / "raw").exists()


def _one(stand_in, name):
    return next(ArchiveFile.from_record(r) for r in stand_in.records if r["name"] == name)


def test_keep_compressed(server, tmp_path):
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[0])[0])
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, keep_compressed=True, backoff=0)
    assert o.status == "fetched" and o.path == tmp_path / f.filename
    assert o.path.read_bytes() == stand_in.files[f.filename]
    assert not (tmp_path / f.name).exists()


def test_local_compressed_copy_is_decompressed_not_fetched(server, tmp_path):
    """Files the user already unpacked from an archive tarball (.fits.bz2) are used, not fetched again."""
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[0])[0])
    (tmp_path / f.filename).write_bytes(stand_in.files[f.filename])
    p = archive.plan(archive.Archive(stand_in.url), PROGRAM, tmp_path, filters=("r",), obj="M8-1")
    assert p.status(f) == "present as .bz2" and f.filename not in {g.filename for g in p.to_fetch()}
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "decompressed" and stand_in.file_requests() == []
    assert (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()
    assert (tmp_path / f.filename).read_bytes() == stand_in.files[f.filename]  # the user's copy is kept


@pytest.mark.e2e
def test_interrupted_transfer_resumes(server, tmp_path):
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[1])[0])
    stand_in.cut_after[f.filename] = 100_000
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "fetched"
    assert (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()
    (first, whole), (again, ranged) = stand_in.file_requests()
    assert first == again == f.filename and whole is None
    resumed_at = int(ranged.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 100_000  # at most the chunk being read when the connection dropped is lost
    assert o.bytes == f.file_size


def test_server_errors_are_retried(server, tmp_path, caplog):
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[1])[1])
    stand_in.unavailable[f.filename] = 2
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "fetched" and len(stand_in.file_requests()) == 3
    assert caplog.text.count("HTTP 503") == 2 and (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()


@pytest.mark.e2e
def test_partial_file_from_a_killed_run_is_completed(server, tmp_path):
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[2])[0])
    part = tmp_path / ".partial" / (f.filename + ".part")
    part.parent.mkdir()
    part.write_bytes(stand_in.files[f.filename][:12345])
    assert not (tmp_path / f.name).exists()  # the partial file is not in the raw folder's namespace
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "fetched" and o.bytes == f.file_size - 12345
    assert stand_in.file_requests() == [(f.filename, "bytes=12345-")]
    assert (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()
    assert not part.exists()


@pytest.mark.e2e
def test_interrupted_run_keeps_partial_files_and_the_next_run_resumes(server, tmp_path):
    """Ctrl-C in the middle of a run: it stops at once, keeps the partial transfers, and the next
    run asks only for the bytes it does not have."""
    import signal
    import threading

    stand_in, raw, truth, _ = server
    files = [_one(stand_in, n) for n in sorted(_expected(truth)[0] | _expected(truth)[1])]
    stand_in.rate = 0.5e6  # bytes per second per connection: a run of about 5 s
    stop = threading.Event()

    def interrupt_once_transfers_are_under_way():  # not after a fixed time: a loaded machine is slower to start
        while not stop.wait(0.05):
            sizes = [p.stat().st_size for p in (tmp_path / ".partial").glob("*.part") if p.exists()]
            if any(sizes):
                os.kill(os.getpid(), signal.SIGINT)
                return

    watcher = threading.Thread(target=interrupt_once_transfers_are_under_way)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            archive.fetch_all(archive.Archive(stand_in.url), files, tmp_path, backoff=0)
    finally:
        stop.set()
        watcher.join()
        stand_in.rate = None
    parts = {p.name[:-5]: p.stat().st_size for p in (tmp_path / ".partial").glob("*.part")}
    assert parts and all(0 < n < stand_in_size for n, stand_in_size in
                         ((parts[f.filename], f.file_size) for f in files if f.filename in parts))
    assert not list(tmp_path.glob("*.fits"))  # nothing half-made in the raw folder
    stand_in.log.clear()
    outcomes = archive.fetch_all(archive.Archive(stand_in.url), files, tmp_path, backoff=0)
    assert all(o.status == "fetched" for o in outcomes)
    ranges = dict(stand_in.file_requests())
    for name, size in parts.items():
        assert ranges[name] == f"bytes={size}-"
    for f in files:
        assert (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()


@pytest.mark.e2e
def test_archive_without_range_support(server, tmp_path):
    """A server that ignores Range sends the whole file again: the partial file is started over."""
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[2])[1])
    part = tmp_path / ".partial" / (f.filename + ".part")
    part.parent.mkdir()
    part.write_bytes(b"x" * 5000)  # not even the archive's bytes
    stand_in.ranges = False
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "fetched" and o.bytes == f.file_size
    assert stand_in.file_requests() == [(f.filename, "bytes=5000-")]
    assert (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()


@pytest.mark.e2e
def test_checksum_mismatch_is_refetched(server, tmp_path):
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[0])[1])
    stand_in.corrupt[f.filename] = 1
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "fetched" and len(stand_in.file_requests()) == 2
    assert (tmp_path / f.name).read_bytes() == (raw / f.name).read_bytes()
    # an archive that keeps sending bad bytes: given up, nothing left behind
    g = _one(stand_in, sorted(_expected(truth)[0])[2])
    stand_in.corrupt[g.filename] = 99
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [g], tmp_path / "b", retries=2, backoff=0)
    assert o.status == "failed" and "checksum mismatch" in o.message and o.message.startswith(g.filename)
    assert not list((tmp_path / "b").rglob("*.fits*"))


def test_proprietary_with_session_cookie(server, tmp_path):
    stand_in, raw, truth, private = server
    f = _one(stand_in, private)
    assert f.proprietary()
    [o] = archive.fetch_all(archive.Archive(stand_in.url, cookie=""), [f], tmp_path / "a", backoff=0)
    assert o.status == "proprietary" and "HTTP 403" in o.message
    [o] = archive.fetch_all(archive.Archive(stand_in.url, cookie=TOKEN), [f], tmp_path / "b", backoff=0)
    assert o.status == "fetched"


def test_different_local_file_is_not_overwritten(server, tmp_path):
    stand_in, raw, truth, _ = server
    f = _one(stand_in, sorted(_expected(truth)[0])[0])
    mine = tmp_path / f.name
    mine.write_bytes(b"my own reduction, not the archive's")
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, backoff=0)
    assert o.status == "conflict" and str(mine) in o.message and "--replace" in o.message
    assert mine.read_bytes() == b"my own reduction, not the archive's" and stand_in.file_requests() == []
    [o] = archive.fetch_all(archive.Archive(stand_in.url), [f], tmp_path, replace=True, backoff=0)
    assert o.status == "replaced" and "replaced" in o.message
    assert mine.read_bytes() == (raw / f.name).read_bytes()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_archive_down_is_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["download", PROGRAM, "--raw", str(tmp_path), "--archive", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "unreachable" in err[0] and "Traceback" not in err[0]


def test_archive_answering_something_else_is_one_line(server, tmp_path, capsys):
    stand_in = server[0]
    assert main(["download", PROGRAM, "--raw", str(tmp_path), "--archive", stand_in.url + "/nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a JSON listing" in err[0]


def test_parse_dates():
    assert associate.parse_dates("20061231") == (date(2006, 12, 31), date(2006, 12, 31))
    assert associate.parse_dates("20060901-20061001") == (date(2006, 9, 1), date(2006, 10, 1))
    # the one date syntax of gmosred (select, the configuration's dates) is the documented one
    assert associate.parse_dates("2006-09-01:2006-10-01") == (date(2006, 9, 1), date(2006, 10, 1))
    assert associate.parse_dates("2006-12-31") == (date(2006, 12, 31), date(2006, 12, 31))
    for bad in ("2006-13-31", "20061301", "20061002-20061001", "2006-10-02:2006-10-01", "1-2-3", "2006-09-*"):
        with pytest.raises(GmosredError, match="--dates"):
            associate.parse_dates(bad)


def test_no_network_needed_for_help():
    """The download command is described without importing astroquery (lazy imports)."""
    import subprocess
    import sys

    code = ("import sys; from gmosred.cli import build_parser; build_parser(); "
            "print('astroquery' in sys.modules, 'requests' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert res.stdout.split() == ["False", "False"]
