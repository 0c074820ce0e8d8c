"""Faults a user can cause (and a hostile one): each is one clear line, nothing stale is used, nothing made is lost.

Read-only folders are real: a read-only bind mount when the tests run as root (as in CI, where a
chmod would not stop root), a chmod otherwise; a full disk is a small tmpfs (root only).
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from astropy.io import fits

from gmosred.cli import main

EPOCH = "1700000000"


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (a folder, made if needed) cannot be written for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root with mount rights)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, mb: int):
    """A ``mb`` MB file system at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root with mount rights)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def one_line_error(capsys, code: int, *words: str) -> str:
    """The command's stderr is one 'gmosred: error:' line naming ``words``; returns it."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("gmosred: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def products(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.fits"))}


@pytest.fixture(scope="module")
def tiny(small_run, tmp_path_factory):
    """A small raw folder of copies: 3 biases, 3 r flats, 3 r frames of M8-1; and its truth."""
    out, truth = small_run
    d = tmp_path_factory.mktemp("tiny") / "raw"
    d.mkdir()
    picked = {"bias": [], "twilight": [], "science": []}
    for r in truth.frames:
        kind = r["kind"] if r["kind"] in ("bias", "twilight") else "science"
        if (kind == "bias" or r["band"] == "r") and (kind != "science" or r["object"] == "M8-1") \
                and len(picked[kind]) < 3:
            picked[kind].append(r["file"])
            shutil.copy2(out / "raw" / f"{r['file']}.fits", d / f"{r['file']}.fits")
    from gmosred.obslog import index

    index.build(d, show_progress=False)
    return d, picked


@pytest.fixture(scope="module")
def clean(tiny, tmp_path_factory):
    """A clean run of the tiny folder (fixed time stamps): {product: bytes}."""
    raw, _ = tiny
    work = tmp_path_factory.mktemp("clean")
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, GMOSRED_NO_PROGRESS="1")
    done = subprocess.run([sys.executable, "-m", "gmosred", "run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return work, products(work)


def raw_copy(tiny, tmp_path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(tiny[0], raw)
    (raw / "obsLog.sqlite3").unlink(missing_ok=True)
    return raw


# ------------------------------------------------------------------ quick: refusals before any work
def test_read_only_folders_are_one_line(tiny, tmp_path, capsys):
    raw, picked = tiny
    some = str(raw / f"{picked['bias'][0]}.fits")
    with read_only(tmp_path / "ro") as ro:
        one_line_error(capsys, main(["run", "--until", "mosaic", str(raw), "--workdir", str(ro)]), str(ro), "cannot write", "--workdir")
        one_line_error(capsys, main(["run", "--until", "mosaic", str(raw), "--workdir", str(ro / "sub")]), "sub", "--workdir")
        one_line_error(capsys, main(["bias", some, "-o", str(ro / "MCbias.fits")]), str(ro), "--output")
        one_line_error(capsys, main(["reduce", some, "--outdir", str(ro)]), str(ro), "--outdir")
        one_line_error(capsys, main(["mosaic", some, "--outdir", str(ro)]), str(ro), "--outdir")
        one_line_error(capsys, main(["simulate", str(ro / "sim")]), "sim", "cannot write")
        one_line_error(capsys, main(["select", "bias", "--db", str(raw / "obsLog.sqlite3"), "--at-list",
                                     str(ro / "b.lis")]), str(ro), "--at-list")
        assert not any(ro.iterdir())


def test_observing_log_in_a_read_only_folder(tiny, tmp_path, capsys):
    """A read-only raw folder: `obslog` says to give --db elsewhere; `run` keeps the log in the work folder."""
    raw = raw_copy(tiny, tmp_path)
    before = snapshot(raw)
    with read_only(raw):
        one_line_error(capsys, main(["obslog", str(raw)]), "obsLog.sqlite3", "--db")
        assert main(["obslog", str(raw), "--db", str(tmp_path / "log.sqlite3")]) == 0
        one_line_error(capsys, main(["obslog", "use", str(raw), "S1", "--no", "--db", str(raw / "x.sqlite3")]),
                       "x.sqlite3")
        assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
        assert "MCbias.fits" in capsys.readouterr().out
    assert snapshot(raw) == before


def test_reading_commands_create_nothing(tiny, tmp_path, capsys):
    """select/show on a missing log, a missing folder: one line, nothing created; a dry run writes nothing."""
    one_line_error(capsys, main(["select", "bias", "--db", str(tmp_path / "none" / "obsLog.sqlite3")]),
                   "none/obsLog.sqlite3", "no observing log")
    one_line_error(capsys, main(["select", "bias", "--db", str(tmp_path / "obsLog.sqlite3")]), "no observing log")
    assert not any(tmp_path.iterdir())
    raw = raw_copy(tiny, tmp_path)
    assert main(["obslog", str(raw)]) == 0
    (raw / "S20990101S0001.fits").write_bytes(bytes(2880))  # a new, bad file the dry run must not index
    before = snapshot(raw)
    capsys.readouterr()
    assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "MCbias.fits" in out.out and "S20990101S0001.fits" in out.err
    assert snapshot(raw) == before and not (tmp_path / "w").exists()


def test_truncation_is_told_alike_everywhere(tiny, tmp_path, capsys):
    raw = raw_copy(tiny, tmp_path)
    victim = next(raw.glob("*.fits"))
    os.truncate(victim, victim.stat().st_size // 2)
    assert main(["info", str(victim)]) == 1
    told = capsys.readouterr().err.strip().removeprefix("error: ")
    assert main(["obslog", str(raw)]) == 0
    assert f"rejected: {victim}: {told.split(': ', 1)[1]}" in capsys.readouterr().err


# ------------------------------------------------------------------ e2e: runs that meet a fault
@pytest.mark.e2e
def test_stale_products_are_never_used(tiny, clean, tmp_path, capsys):
    """A frame whose reduction now fails: its rg and mrg from the earlier run are reported stale, taken out
    of the manifest (never 'up to date' again) and nothing is made from them."""
    raw = raw_copy(tiny, tmp_path)
    work = tmp_path / "w"
    shutil.copytree(clean[0], work)
    victim = raw / f"{tiny[1]['science'][0]}.fits"
    good = victim.read_bytes()
    with fits.open(victim, mode="update") as h:
        del h[2].header["DATASEC"]
    code = main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 1
    rg, mrg = f"rg{victim.name}", f"mrg{victim.name}"
    assert f"  {rg}: " in out and "no DATASEC" in out and f"  {mrg}: {rg} failed in this run" in out
    manifest = json.loads((work / "manifest.json").read_text())
    assert rg not in manifest and mrg not in manifest
    log = (work / "gmosred.log").read_text()
    assert "stale:" in log and "no DATASEC" in log
    victim.write_bytes(good)  # mended: remade, equal to the clean run's but for the time stamps
    assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"]) == 0
    assert "\nstale: " not in capsys.readouterr().out and rg in json.loads((work / "manifest.json").read_text())


@pytest.mark.e2e
def test_full_disk_stops_cleanly_and_resumes(tiny, clean, tmp_path, capsys, monkeypatch):
    """ENOSPC: the run stops with its summary, keeps every whole product, leaves no temporary file; moved
    to a disk with room it finishes with the clean run's bytes."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    raw = raw_copy(tiny, tmp_path)
    sizes = {name: len(data) for name, data in clean[1].items()}
    room = (sizes["MCbias.fits"] + sizes["MCflat_r.fits"]) / 2**20 + 4  # the masters and a little more
    with small_disk(tmp_path / "disk", int(room)) as disk:
        work = disk / "w"
        code = main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "2"])
        out, err = capsys.readouterr()
        assert code == 1 and "Traceback" not in err
        assert "stopped: " in out and "No space left on device" in out and "not started" in out
        assert not list(work.glob(".*tmp"))
        kept = products(work)
        manifest = json.loads((work / "manifest.json").read_text())
        assert kept and set(manifest) == set(kept)
        for name, data in kept.items():
            assert data == clean[1][name], name
        shutil.copytree(work, tmp_path / "moved")
    assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(tmp_path / "moved"), "--jobs", "1"]) == 0
    assert products(tmp_path / "moved") == clean[1]


@pytest.mark.e2e
def test_another_setup_renames_nothing(tiny, clean, tmp_path, capsys):
    """Frames of another setup (fast read) added and removed: the first setup's products keep their names
    and are not remade; the new masters carry their setup."""
    raw = raw_copy(tiny, tmp_path)
    work = tmp_path / "w"
    assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"]) == 0
    first = snapshot(work)
    added = []
    for k, name in enumerate(tiny[1]["bias"]):
        new = raw / f"S20991231S{k + 1:04d}.fits"
        with fits.open(raw / f"{name}.fits") as h:
            h[0].header["AMPINTEG"] = 1000  # fast read
            h[0].header["DATE-OBS"] = "2099-12-31"
            h.writeto(new)
        added.append(new)
    capsys.readouterr()
    main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"])
    out = capsys.readouterr().out
    assert "MCbias_GMOS-S_EEV2037-06-03_4x4_FullFrame_fast-low.fits" in out
    now = snapshot(work)
    for name, (mtime, data) in first.items():
        if name.endswith(".fits"):
            assert now[name] == (mtime, data), name  # not renamed, not rewritten
    for p in added:
        p.unlink()
    main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "1"])
    again = snapshot(work)
    assert all(again[n] == first[n] for n in first if n.endswith(".fits"))


@pytest.mark.e2e
def test_messages_on_their_own_lines_and_in_the_log(tiny, tmp_path):
    """With progress bars on and two workers: every message starts its own line (none glued to a bar),
    each once; the log file has the workers' messages, the problems and the summary; products say RADESYS."""
    raw = raw_copy(tiny, tmp_path)
    (raw / "S20990101S0001.fits").write_text("not a FITS file")
    work = tmp_path / "w"
    env = {k: v for k, v in os.environ.items() if k != "GMOSRED_NO_PROGRESS"}
    done = subprocess.run([sys.executable, "-m", "gmosred", "run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "2"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    messages = []
    for line in done.stderr.split("\n"):
        if "gmosred:" in line:
            shown = line.split("\r")[-1]  # what stays on the terminal's line once the carriage returns are done
            assert shown.startswith("gmosred: "), repr(line)
            messages.append(shown)
    assert any("unlit pixels" in m for m in messages) and any("S20990101S0001" in m for m in messages)
    assert len(messages) == len(set(messages)), messages
    log = (work / "gmosred.log").read_text()
    for m in messages:
        assert m.split(": ", 2)[2] in log
    assert "summary:" in log and "reduce " in log
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from astropy.wcs import WCS

        header = fits.getheader(next(work.glob("mrg*.fits")), "SCI")
        assert "RADESYS" in header and "RADECSYS" not in header
        WCS(header)


@pytest.mark.e2e
def test_killed_at_random_moments_resumes_identically(tiny, clean, tmp_path):
    """Ten kill -9s at random moments, each run resumed: the products equal a clean run's byte for byte."""
    import random

    rng = random.Random(14)
    raw = raw_copy(tiny, tmp_path)
    work = tmp_path / "w"
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, GMOSRED_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "gmosred", "run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "2"]
    kills = 0
    for _ in range(40):  # bounded; ten kills are reached well before
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        for name, data in products(work).items() if work.exists() else ():
            assert data == clean[1][name], name  # whatever exists is whole
        if proc.returncode == 0:  # it finished before the kill: all there, and again from nothing
            assert products(work) == clean[1]
            shutil.rmtree(work)
        if kills == 10:
            break
    assert kills == 10
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert products(work) == clean[1]
    time.sleep(0.5)
    assert not list(work.glob(".*tmp"))
