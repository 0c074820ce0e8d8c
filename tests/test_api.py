"""The Python API: the cookbook's reduction as a script of a few lines, with the command line's defaults."""
import subprocess
import sys

import pytest

SCRIPT = '''
import sys
from pathlib import Path
from gmosred import api as gmos
from gmosred.frame.model import read_processed

raw, red = Path(sys.argv[1]), Path(sys.argv[2])
from gmosred.simulate import load_truth
truth = load_truth(raw.parent).frames
files = lambda pick: [raw / f"{r['file']}.fits" for r in truth if pick(r)]
bias = gmos.bias(files(lambda r: r["kind"] == "bias"), red / "MCbias.fits")
flat = gmos.flat(files(lambda r: r["kind"] == "twilight" and r["band"] == "r"), red / "MCflat_r.fits", bias=bias)
science = files(lambda r: r["kind"] == "science" and r["band"] == "r")[:2]
rg = gmos.reduce(science, red, bias=bias, flat=flat)
mrg = gmos.mosaic(rg, red, interpolant="cubic")
frame = gmos.mosaic_frame(gmos.reduce_raw(gmos.read(science[0]), gmos.read(bias), gmos.read(flat)))
print(len(rg), len(mrg), read_processed(mrg[0]).phu["GMSINTER"], frame.planes[0].sci.shape == read_processed(mrg[0]).planes[0].sci.shape)
'''


@pytest.mark.e2e
def test_cookbook_script(small_run, tmp_path):
    out, truth = small_run
    script = tmp_path / "gmos_img_proc.py"
    script.write_text(SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(out / "raw"), str(tmp_path / "red")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["2", "2", "cubic", "True"]


def test_api_parameters_are_the_commands():
    from gmosred import api
    from gmosred.errors import GmosredError

    with pytest.raises(GmosredError, match="lsigma = -2: must be > 0"):
        api.bias([], "x.fits", lsigma=-2)
    with pytest.raises(GmosredError, match="unknown parameter.*kernel.*known: interpolant"):
        api.mosaic([], "x", kernel="cubic")
