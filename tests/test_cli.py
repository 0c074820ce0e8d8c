"""The command line: instant help (no heavy imports), subcommands, demo."""
import re
import subprocess
import sys

from gmosred.cli import main


def test_help_imports_nothing_heavy():
    code = ("import sys; from gmosred.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('numpy', 'astropy', 'scipy', 'tqdm') if m in sys.modules]; print(heavy)")
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


def test_demo_on_existing_run(small_run, capsys, monkeypatch):
    """The demo reuses a run made with the same settings and prints truth comparisons."""
    import shutil

    out, truth = small_run
    assert main(["demo", str(out), "--seed", "7"]) == 0
    text = capsys.readouterr().out
    assert "using the simulated run already in" in text
    assert re.search(r"^science\s+Ha\s+9$", text, re.M) and re.search(r"^bias\s+-\s+5$", text, re.M)
    line = [l for l in text.splitlines() if l.startswith("overscan level - true bias level")][0]
    mean = float(line.split("mean ")[1].split(" ADU")[0])
    assert abs(mean) < 0.05
    selections = re.findall(r"^(bias|twiFlat|sciImg)\s+(\S+)\s+(\d+)\s+(yes|NO)$", text, re.M)
    assert len(selections) == 11 and all(ok == "yes" for *_, ok in selections)
