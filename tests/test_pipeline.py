"""One command from raw folder to mosaicked frames: plan, incremental, resumable, parallel, dask."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gmosred import pipeline
from gmosred.pipeline import config, runners
from gmosred.cli import main
from gmosred.errors import GmosredError

pytestmark = pytest.mark.e2e
EPOCH = "1700000000"  # fixed processing time stamps: outputs comparable byte for byte
#: The pipeline's mechanics are tested up to the mosaics (the measure step: tests/test_measure.py).
MECHANICS = config.load(overrides={"run": {"until": "mosaic"}})


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
    cfg = MECHANICS
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
    assert len([n for n in names if n.startswith("rgS")]) == 12
    assert len([n for n in names if n.startswith("mrgS") or n.startswith("mfrgS")]) == 12
    assert reports["reduce"].done == 12 and not plan.problems
    plan2, again = _run(rawdir, work, jobs=1)
    assert all(r.done == 0 and r.failed == 0 for r in again.values())
    assert again["mosaic"].skipped == 12
    # a changed parameter remakes what depends on it, and only that
    cfg = config.load(overrides={"mosaic": {"interpolant": "cubic"}, "run": {"until": "mosaic"}})
    rep = pipeline.run_plan(pipeline.make_plan(rawdir / "obsLog.sqlite3", work, cfg), work, cfg, show_progress=False)
    assert rep["mosaic"].done == 12 and rep["reduce"].done == 0
    rep = pipeline.run_plan(pipeline.make_plan(rawdir / "obsLog.sqlite3", work, MECHANICS), work, MECHANICS,
                            show_progress=False)
    assert rep["mosaic"].done == 12  # back to linear


def test_fringe_is_removed_where_it_matters_and_skipped_elsewhere(rawdir, reference, tmp_path, capsys):
    """The i frames (EEV CCDs fringe in i) make MCfringe_i.fits and are defringed (frg, then mfrg); the r frames go
    on to their mosaic with the skipped step and its reason in their primary header; a defringed frame is not
    defringed again (one line, no traceback)."""
    from astropy.io import fits

    from gmosred.calibrate import fringe

    work = reference[0]
    with fits.open(work / "MCfringe_i.fits") as h:
        inputs = sorted(str(n).strip() for n in h["FRINGEIN"].data["FILENAME"])
        assert "GIFRINGE" in h[0].header and [e.header["EXTNAME"] for e in h[1:]].count("USED") == 3
    assert inputs == sorted(p.name for p in work.glob("rgS*.fits") if fits.getval(p, "FILTER2").startswith("i"))
    defringed = sorted(work.glob("frgS*.fits"))
    assert [p.name[1:] for p in defringed] == inputs
    for path in defringed:
        with fits.open(path) as h:
            assert "GIRMFRIN" in h[0].header and h[0].header["FRINGAMP"] > 3 * h[0].header["FRINGRES"] > 0
            assert all(h["SCI", v].header["FRINGERR"] > 0 for v in (1, 2, 3))
        assert (work / f"m{path.name}").exists() and not (work / f"m{path.name[1:]}").exists()
    for path in sorted(work.glob("mrgS*.fits")):
        assert fits.getval(path, "FILTER2").startswith("r")
        assert "rmfringe: r does not fringe on EEV CCDs" in fits.getval(path, "SKIPPED")
    with pytest.raises(GmosredError, match="GIRMFRIN was already applied"):
        fringe.remove_fringe_file(defringed[0], tmp_path, work / "MCfringe_i.fits")
    assert main(["rmfringe", str(defringed[0]), "--fringe", str(work / "MCfringe_i.fits"),
                 "--outdir", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "GIRMFRIN was already applied" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.fits"))


def test_killed_run_resumes_identically(rawdir, reference, tmp_path):
    ref_work = reference[0]
    work = tmp_path / "w"
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, GMOSRED_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "gmosred", "run", "--until", "mosaic", str(rawdir), "--workdir", str(work), "--jobs", "1"]
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
        runners.Dask("tcp://127.0.0.1:9")


def test_group_without_flats(rawdir, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    from astropy.io import fits

    for p in rawdir.glob("*.fits"):
        hdr = fits.getheader(p)
        if not (hdr["OBJECT"] == "Twilight" and hdr["FILTER2"].startswith("i_")):
            os.symlink(os.readlink(p), raw / p.name)
    work = tmp_path / "w"
    assert main(["run", "--until", "mosaic", str(raw), "--workdir", str(work), "--jobs", "2"]) == 1
    out, err = capsys.readouterr()
    assert "6 i science frame(s) of GMOS-S 4x4 Full Frame" in err and "have no twilight flats in i" in err
    assert "missing: 6 i science frame(s)" in out
    assert len(list(work.glob("mrgS*.fits"))) == 6  # the r frames were done
    assert "have no twilight flats in i" in (work / "gmosred.log").read_text()


def test_dry_run_and_config(rawdir, tmp_path, capsys):
    assert main(["run", "--until", "mosaic", str(rawdir), "--workdir", str(tmp_path / "w"), "--dry-run"]) == 0
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
    with pytest.raises(GmosredError, match=r"c.toml \[mosaic\]: unknown key\(s\) kernel"):
        config.load(cfg_file)


def test_pixels_are_todays(reference):
    """The restructured pipeline writes the pixels the code before it wrote (a stored digest)."""
    import json

    from pixel_digest import DIGESTS, digests

    assert digests(reference[0]) == json.loads(DIGESTS.read_text())


def test_provenance_in_every_product(reference, tmp_path):
    from astropy.io import fits

    from gmosred.frame import provenance as prov
    from gmosred.frame.model import read_processed
    from gmosred.frame.provenance import md5
    from gmosred.mosaic import mosaic_file

    work = reference[0]
    mrg = sorted(work.glob("mrgS*.fits"))[0]
    f = read_processed(mrg)
    rg = work / mrg.name[1:]
    raw = [n for n, _, step in prov.sources(f) if step == "reduce" and n.startswith("S")]
    assert len(raw) == 1 and f.phu["GIREDUCE"] and f.phu["GMOSAIC"] and f.phu["GMOSRED"]
    files = {n: m for n, m, _ in prov.sources(f)}
    assert files["MCbias.fits"] == md5(work / "MCbias.fits") == f.phu["BIASMD5"]
    assert files[rg.name] == md5(rg) and f.phu["FLATIM"].startswith("MCflat_")
    steps = [h["primitive"] for h in prov.history(f)]
    assert steps == ["reduce", "mosaic"]
    args = prov.history(f)[1]["args"]
    assert args["mosaic"] == {"interpolant": "linear", "tile": False, "prefix": "m"} and args["gmosred"]
    with fits.open(mrg) as h:
        assert h["VAR"].header["BUNIT"] == "electron**2" and "BUNIT" not in h["DQ"].header
        assert h["DQ"].header["DQBIT6"] == "unilluminated" and h["SCI"].header["BUNIT"] == "electron"
        assert [x.name for x in h] == ["PRIMARY", "SCI", "VAR", "DQ", "PROVENANCE", "PROVHISTORY"]
    bias = read_processed(work / "MCbias.fits")
    assert len(prov.sources(bias)) == bias.phu["NCOMBINE"]
    with pytest.raises(GmosredError, match="GMOSAIC was already applied"):
        mosaic_file(mrg, tmp_path)
    assert mrg.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_products_open_in_astrodata(reference):
    astrodata = pytest.importorskip("astrodata")
    work = reference[0]
    for name, n in (("MCbias.fits", 3), (sorted(work.glob("rgS*.fits"))[0].name, 3),
                    (sorted(work.glob("mrgS*.fits"))[0].name, 1)):
        ad = astrodata.open(str(work / name))
        assert len(ad) == n, name
        for ext in ad:
            assert ext.data.ndim == 2 and ext.variance.shape == ext.data.shape and ext.mask.shape == ext.data.shape
            assert ext.data.dtype.kind == "f" and ext.mask.dtype == "uint16"
        assert "PROVENANCE" in {t.upper() for t in ad.tables} or hasattr(ad, "PROVENANCE")


def test_a_new_step_is_one_row(rawdir, reference, tmp_path, monkeypatch, capsys):
    """A step added to the table and a recipe goes through the plan, the run, the manifest and --dry-run."""
    from dataclasses import replace as dc_replace

    from gmosred.frame.model import read_processed
    from gmosred.params import checked, param
    from gmosred.pipeline import steps

    @checked
    class PeakParams:
        """Brightest pixel of a mosaic (a test step)."""

        clip: float = param(1e9, "values above are left out", low=0)

    def peak(task, p):
        f = read_processed(task.inputs[0])
        sci = f.planes[0].sci
        task.output.write_text(f"{float(sci[sci < p['peak'].clip].max())}\n")
        return task.output

    monkeypatch.setitem(steps.SECTIONS, "peak", PeakParams())
    monkeypatch.setitem(steps.STEPS, "peak", steps.Step("peak", "brightest pixel", ("peak",), peak,
                                                        output=lambda inp, p: f"peak_{Path(inp).stem}.txt"))
    monkeypatch.setitem(steps.RECIPES, "sciImg", ("reduce", "fringe", "rmfringe", "mosaic", "peak"))
    work = tmp_path / "w"
    for name in _products(reference[0]):
        (work / name).parent.mkdir(exist_ok=True)
        (work / name).write_bytes((reference[0] / name).read_bytes())
    (work / "manifest.json").write_bytes((reference[0] / "manifest.json").read_bytes())
    cfg = config.Config()
    plan = pipeline.make_plan(rawdir / "obsLog.sqlite3", work, cfg)
    assert len(plan.of("peak")) == 12 and "peak     6 frame(s) r, GMOS-S 4x4" in plan.describe()
    rep = pipeline.run_plan(plan, work, cfg, show_progress=False)
    assert rep["peak"].done == 12 and rep["mosaic"].done == 0 and rep["reduce"].done == 0
    assert len(list(work.glob("peak_mrg*.txt"))) == 6 and len(list(work.glob("peak_mfrg*.txt"))) == 6  # r; i
    again = pipeline.run_plan(plan, work, cfg, show_progress=False)
    assert again["peak"].skipped == 12 and again["peak"].done == 0
    cfg2 = config.load(overrides={"peak": {"clip": 5000.0}})
    assert cfg2.peak == dc_replace(PeakParams(), clip=5000.0)
    assert pipeline.run_plan(plan, work, cfg2, show_progress=False)["peak"].done == 12
    assert main(["config"]) == 0 and "[peak]" in capsys.readouterr().out


def test_configuration_is_checked_when_loaded(tmp_path):
    bad = {
        ("mosaic", "interpolant", "sinc"): r"\[mosaic\] interpolant = 'sinc': choose from nearest, linear, cubic",
        ("bias", "lsigma", "x"): r"\[bias\] lsigma = 'x': must be a number",
        ("bias", "lsigma", True): r"\[bias\] lsigma = True: must be a number",
        ("bias", "threads", 0): r"\[bias\] threads = 0: must be >= 1",
        ("bias", "nkeep", 1.5): r"\[bias\] nkeep = 1.5: must be a whole number",
        ("bias", "band_mb", -1): r"\[bias\] band_mb = -1: must be > 0",
        ("select", "bias_dates", "garbage"): r"\[select\] bias_dates: date selection 'garbage'",
        ("select", "flat_dates", "2006-13-01:2006-12-31"): r"\[select\] flat_dates: date selection",
        ("overscan", "mode", "poly"): r"\[overscan\] mode = 'poly': choose from row",
    }
    for (section, key, value), message in bad.items():
        with pytest.raises(GmosredError, match=message):
            config.load(overrides={section: {key: value}})
    f = tmp_path / "c.toml"
    f.write_text('[mosaic]\ninterpolant = "sinc"\n')
    with pytest.raises(GmosredError, match=r"c.toml \[mosaic\] interpolant = 'sinc'"):
        config.load(f)
    assert main(["run", "--until", "mosaic", "nowhere", "--workdir", str(tmp_path / "w"), "--config", str(f)]) == 2
    assert not (tmp_path / "w").exists()  # refused before anything is done
    assert config.load(overrides=config.parse_set(["mosaic.interpolant=cubic", "bias.lsigma=2.5",
                                                   "select.objects=M8-%"])).bias.lsigma == 2.5
    with pytest.raises(GmosredError, match="SECTION.KEY=VALUE"):
        config.parse_set(["lsigma=2"])
    assert main(["config", "--set", "mosaic.interpolant=cubic"]) == 0


def test_threads_do_not_remake(rawdir, reference, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(reference[0], work)
    cfg = config.load(overrides={"bias": {"threads": 1, "band_mb": 4.0}, "run": {"until": "mosaic"}})
    rep = pipeline.run_plan(pipeline.make_plan(rawdir / "obsLog.sqlite3", work, cfg), work, cfg, show_progress=False)
    assert all(r.done == 0 for r in rep.values()) and rep["bias"].skipped == 1
    moved = tmp_path / "moved"
    work.rename(moved)  # the manifest is relative to the work folder: moving it remakes nothing
    rep = pipeline.run_plan(pipeline.make_plan(rawdir / "obsLog.sqlite3", moved, cfg), moved, cfg, show_progress=False)
    assert all(r.done == 0 for r in rep.values())


def test_step_commands_derive_from_the_table():
    from gmosred.cli.calibrate import STEP_COMMANDS
    from gmosred.pipeline.steps import OPTIONS

    assert tuple(OPTIONS) == STEP_COMMANDS
    with pytest.raises(SystemExit):
        main(["bias", "--lsigma", "x", "b.fits"])
    assert main(["bias", "--lsigma", "-1", "b.fits"]) == 2


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_workers_end_with_the_run(rawdir, tmp_path, how):
    """kill -9 of a run takes its workers with it; Ctrl-C stops the whole run at once, keeping what was made."""
    work = tmp_path / "w"
    env = dict(os.environ, GMOSRED_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "gmosred", "run", "--until", "mosaic", str(rawdir), "--workdir", str(work), "--jobs", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (work / "MCbias.fits").exists():
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "the run has worker processes"
    t0 = time.time()
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=30)
    if how == "SIGINT":
        assert time.time() - t0 < 5 and proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        assert (work / "MCbias.fits").exists()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)
