"""One command from raw folder to mosaicked frames: plan, incremental, resumable, parallel, dask."""
import os
import signal
import subprocess
import sys
import time

import pytest

from gmosred import config, pipeline
from gmosred.cli import main
from gmosred.errors import GmosredError

EPOCH = "1700000000"  # fixed processing time stamps: outputs comparable byte for byte


@pytest.fixture(scope="module")
def rawdir(small_run, tmp_path_factory):
    """A smaller folder of the simulated run: biases, r and i flats, r and i science of M8-1 and M8-2."""
    out, truth = small_run
    d = tmp_path_factory.mktemp("pipe") / "raw"
    d.mkdir()
    for r in truth.frames:
        if r["kind"] == "bias" or (r["band"] in ("r", "i") and (r["kind"] == "twilight" or r["object"] in ("M8-1", "M8-2"))):
            os.symlink(out / "raw" / f"{r['file']}.fits", d / f"{r['file']}.fits")
    return d


def _run(rawdir, workdir, **kw):
    cfg = config.Config()
    plan = pipeline.prepare(rawdir, workdir, cfg)
    return plan, pipeline.run_plan(plan, workdir, cfg, show_progress=False, **kw)


def _products(workdir):
    return {p.name: p.read_bytes() for p in sorted(workdir.glob("*.fits"))}


@pytest.fixture(scope="module")
def reference(rawdir, tmp_path_factory):
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    work = tmp_path_factory.mktemp("ref")
    plan, reports = _run(rawdir, work, jobs=1)
    yield work, plan, reports
    if saved is None:
        del os.environ["SOURCE_DATE_EPOCH"]
    else:
        os.environ["SOURCE_DATE_EPOCH"] = saved


def test_outputs_and_rerun(rawdir, reference):
    work, plan, reports = reference
    names = set(_products(work))
    assert {"MCbias.fits", "MCflat_r.fits", "MCflat_i.fits"} <= names
    assert len([n for n in names if n.startswith("rgS")]) == 12 and len([n for n in names if n.startswith("mrgS")]) == 12
    assert reports["reduce"].done == 12 and not plan.problems
    plan2, again = _run(rawdir, work, jobs=1)
    assert all(r.done == 0 and r.failed == 0 for r in again.values())
    assert again["mosaic"].skipped == 12
    # a changed parameter remakes what depends on it, and only that
    cfg = config.load(overrides={"mosaic": {"interpolant": "cubic"}})
    rep = pipeline.run_plan(pipeline.make_plan(rawdir / "obsLog.sqlite3", work, cfg), work, cfg, show_progress=False)
    assert rep["mosaic"].done == 12 and rep["reduce"].done == 0
    rep = pipeline.run_plan(pipeline.make_plan(rawdir / "obsLog.sqlite3", work, config.Config()), work, config.Config(),
                            show_progress=False)
    assert rep["mosaic"].done == 12  # back to linear


def test_killed_run_resumes_identically(rawdir, reference, tmp_path):
    ref_work = reference[0]
    work = tmp_path / "w"
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, GMOSRED_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "gmosred", "run", str(rawdir), "--workdir", str(work), "--jobs", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("rgS*.fits"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _products(work)
    assert 0 < len(partial) < len(_products(ref_work))
    for name, data in partial.items():  # whatever exists is whole
        assert data == (ref_work / name).read_bytes(), name
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0
    assert _products(work) == _products(ref_work)
    made = {line.split()[0]: int(line.split()[1]) for line in done.stdout.splitlines()
            if line.split() and line.split()[0] in ("bias", "flat", "reduce") and line.split()[1].isdigit()}
    assert made["bias"] == 0 and made["flat"] == 0 and made["reduce"] < 12  # what was finished was kept
    assert not list(work.glob(".*tmp"))


def test_two_processes_same_outputs(rawdir, reference, tmp_path):
    _run(rawdir, tmp_path, jobs=2)
    assert _products(tmp_path) == _products(reference[0])


def test_dask_same_outputs(rawdir, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        _run(rawdir, tmp_path, dask=cluster.scheduler_address)
    assert _products(tmp_path) == _products(reference[0])
    with pytest.raises(GmosredError, match="cannot reach the dask scheduler"):
        pipeline._dask_client("tcp://127.0.0.1:9")


def test_group_without_flats(rawdir, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    from astropy.io import fits

    for p in rawdir.glob("*.fits"):
        hdr = fits.getheader(p)
        if not (hdr["OBJECT"] == "Twilight" and hdr["FILTER2"].startswith("i_")):
            os.symlink(os.readlink(p), raw / p.name)
    work = tmp_path / "w"
    assert main(["run", str(raw), "--workdir", str(work), "--jobs", "2"]) == 1
    out, err = capsys.readouterr()
    assert "6 i science frame(s) of GMOS-S 4x4 Full Frame" in err and "have no twilight flats in i" in err
    assert "missing: 6 i science frame(s)" in out
    assert len(list(work.glob("mrgS*.fits"))) == 6  # the r frames were done
    assert "have no twilight flats in i" in (work / "gmosred.log").read_text()


def test_dry_run_and_config(rawdir, tmp_path, capsys):
    assert main(["run", str(rawdir), "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bias   MCbias.fits" in out and "flat   MCflat_r.fits" in out and "reduce   6 frame(s) i" in out
    assert not list((tmp_path / "w").glob("*.fits"))
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(text)
    assert config.load(cfg_file) == config.Config()
    cfg_file.write_text(text.replace('interpolant = "linear"', 'interpolant = "cubic"'))
    assert config.load(cfg_file).mosaic.interpolant == "cubic"
    cfg_file.write_text("[mosaic]\nkernel = 'cubic'\n")
    with pytest.raises(GmosredError, match=r"configuration \[mosaic\]: unknown key\(s\) kernel"):
        config.load(cfg_file)
