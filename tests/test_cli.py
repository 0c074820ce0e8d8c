"""The command line: instant help (no heavy imports), subcommands, demo."""
import re
import subprocess
import sys

import pytest

from gmosred.cli import main


def test_help_imports_nothing_heavy():
    code = ("import sys; from gmosred.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('numpy', 'astropy', 'scipy', 'tqdm', 'numba') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    res = subprocess.run([sys.executable, "-m", "gmosred", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for command in ("demo", "simulate", "info"):
        assert command in res.stdout


def test_simulate_bad_size(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["simulate", "x", "--size", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


@pytest.mark.e2e
def test_demo_on_existing_run(small_run, tmp_path, capsys):
    """The demo reuses a run made with the same settings, fetches it from the archive stand-in,
    reduces it and checks every step against the truth."""
    out, truth = small_run
    (tmp_path / "archive").symlink_to(out)
    assert main(["demo", str(tmp_path), "--seed", "7"]) == 0
    text = capsys.readouterr().out
    assert "using the simulated run already in" in text
    rows = re.findall(r"^(download|obslog|bias|flat|reduce|mosaic|fringe)\s.*\s(yes|NO)$", text, re.M)
    assert [step for step, _ in rows] == ["download", "obslog", "bias", "flat", "reduce", "reduce", "mosaic", "fringe",
                                          "fringe"]
    assert all(ok == "yes" for _, ok in rows)
    assert len(list((tmp_path / "raw").glob("*.fits"))) == len(truth.frames)
    red = tmp_path / "reduced"
    assert (red / "MCbias.fits").exists() and (red / "MCfringe_i.fits").exists()
    n_i = len([r for r in truth.frames if r["kind"] == "science" and r["band"] == "i"])
    assert len(list(red.glob("mfrg*.fits"))) == n_i and len(list(red.glob("m*rg*.fits"))) == 45


@pytest.mark.e2e
def test_tests_stand_alone(tmp_path):
    """A copy of the repository with nothing beside it runs the tests that read packaged fixtures."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    copy = tmp_path / "alone" / "gmosred"
    for name in files.stdout.split():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, copy / name)
    assert not (copy.parent / "shared").exists()
    env = {k: v for k, v in __import__("os").environ.items() if k != "GMOSRED_SHARED"}
    env["PYTHONPATH"] = str(copy / "src")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sections.py",
                          "tests/test_mosaic.py::test_real_iraf_frame", "tests/test_frame.py"],
                         cwd=copy, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "passed" in res.stdout
    where = subprocess.run([sys.executable, "-c", "import gmosred; print(gmosred.__file__)"], env=env,
                           capture_output=True, text=True, cwd=copy).stdout.strip()
    assert where.startswith(str(copy / "src")), where  # the copy's code ran, not the installed one
