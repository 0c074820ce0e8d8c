"""The Python API: the cookbook's reduction from a Python session or a script, with the command line's
parameters and defaults (both derive from the step table).

On files, as the Gemini IRAF tasks were called from PyRAF (``from pyraf.iraf import gmos``)::

    from gmosred import api as gmos
    bias = gmos.bias(biases, "MCbias.fits")                       # gbias
    flat = gmos.flat(flats_r, "MCflat_r.fits", bias=bias)         # giflat
    rg = gmos.reduce(science, "red/", bias=bias, flat=flat)      # gireduce: one rg file per frame
    fringe = gmos.fringe(rg_i, "MCfringe_i.fits")                  # gifringe (i frames, dithered)
    frg = gmos.rmfringe(rg_i, "red/", fringe=fringe)             # girmfringe: frg files
    mrg = gmos.mosaic(rg, "red/")                                 # gmosaic
    gmos.run("raw/", "reduced/", jobs=2, set={"mosaic": {"interpolant": "cubic"}})  # all of it

Parameters are the command's options with ``_`` for ``-``: ``gmos.bias(..., lsigma=2.5,
overscan_mode="row")`` is ``gmosred bias ... --lsigma 2.5 --overscan-mode row``. A frame that cannot
be reduced raises :class:`gmosred.errors.GmosredError` with one line naming it (``reduce`` and
``mosaic`` take many files and go on past a bad one with ``keep_going=True``).

In memory (no files): ``gmos.read(path)`` gives a RawFrame or a Frame (SCI/VAR/DQ planes);
``gmos.reduce_raw(raw, bias_frame, flat_frame)`` and ``gmos.mosaic_frame(frame)`` return Frames;
``gmos.write(frame, path)`` writes one atomically.
"""
from __future__ import annotations

from pathlib import Path

from .calibrate.reduce import reduce_raw  # noqa: F401
from .errors import GmosredError
from .frame.model import read, write  # noqa: F401
from .mosaic import mosaic_frame  # noqa: F401
from .pipeline.steps import make, parameters


def bias(files, output="MCbias.fits", **params) -> Path:
    """Master bias from raw biases (gbias)."""
    return make("bias", files, params=parameters("bias", params), output=output)


def flat(files, output, bias=None, **params) -> Path:
    """Master twilight flat of one filter (giflat)."""
    return make("flat", files, params=parameters("flat", params), output=output, calibrations={"bias": bias})


def _each(step: str, files, outdir, calibrations: dict, keep_going: bool, params: dict) -> list[Path]:
    p = parameters(step, params)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    out = []
    for f in [files] if isinstance(files, (str, Path)) else files:
        try:
            out.append(make(step, f, params=p, outdir=outdir, calibrations=calibrations))
        except GmosredError:
            if not keep_going:
                raise
    return out


def reduce(files, outdir=".", bias=None, flat=None, keep_going: bool = False, **params) -> list[Path]:
    """Basic reduction of raw science frames (gireduce): rg<file>.fits in ``outdir``."""
    return _each("reduce", files, outdir, {"bias": bias, "flat": flat}, keep_going, params)


def fringe(files, output, **params) -> Path:
    """Fringe frame from reduced, dithered frames of one setup and filter (gifringe)."""
    return make("fringe", files, params=parameters("fringe", params), output=output)


def rmfringe(files, outdir=".", fringe=None, keep_going: bool = False, **params) -> list[Path]:
    """The fringe fitted and removed from reduced frames (girmfringe): f<rg file>.fits in ``outdir``."""
    return _each("rmfringe", files, outdir, {"fringe": fringe}, keep_going, params)


def mosaic(files, outdir=".", keep_going: bool = False, **params) -> list[Path]:
    """The CCDs of reduced frames into one plane (gmosaic): m<rg file>.fits in ``outdir``."""
    return _each("mosaic", files, outdir, {}, keep_going, params)


def run(rawdir, workdir, *, config=None, set: dict | None = None, jobs: int = 1, dask: str | None = None,
        force: bool = False, dry_run: bool = False, show_progress: bool | None = False):
    """The whole pipeline on a raw folder, as ``gmosred run`` (``set``: {section: {key: value}} over
    the ``config`` TOML file). Returns (plan, {step: StepReport}); with ``dry_run`` only the plan."""
    from . import pipeline

    cfg = pipeline.load(config, set)
    plan = pipeline.prepare(rawdir, workdir, cfg, jobs=jobs, show_progress=show_progress)
    if dry_run:
        return plan, {}
    with pipeline.logfile(workdir):
        return plan, pipeline.run_plan(plan, workdir, cfg, jobs=jobs, dask=dask, force=force,
                                       show_progress=show_progress)
