"""The step table: every step of the pipeline declared once, and the recipes that chain them.

A :class:`Step` row says what the step makes (and how its outputs are named: the cookbook's names),
what it takes (raw frames of a kind from the observing log, or the products of the step before it in
its recipe), which calibrations it needs (products of other steps, matched by ``obslog.match``), which
configuration sections it reads (their parameter dataclasses: the one source of every default) and
the file-step function that makes one product. The planner, the runner, the manifest's hashes,
``--dry-run``, the summary table, ``gmosred config`` and ``gmosred run --set`` are all derived from
these rows: a new step is one module and one row here (and a place in a recipe).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..calibrate.flat import FLAT_COMBINE, FlatParams
from ..calibrate.fringe import FRINGE_COMBINE, FringeParams
from ..calibrate.overscan import OverscanParams
from ..calibrate.reduce import ReduceParams
from ..engines.combine import CombineParams
from ..frame.model import stem
from ..measure.astrometry import AstrometryParams
from ..measure.photometry import PhotometryParams
from ..measure.sources import DetectParams
from ..measure.step import MeasureParams
from ..mosaic import MosaicParams
from ..params import checked, param


@checked
class SelectParams:
    """Which frames the pipeline takes from the observing log (the cookbook's date selections)."""

    bias_dates: str = param("", "dates of the biases: YYYY-MM-DD:YYYY-MM-DD, one date or a GLOB pattern; '' = any")
    flat_dates: str = param("", "dates of the twilight flats (as bias_dates)")
    science_dates: str = param("", "dates of the science frames (as bias_dates)")
    objects: str = param("%", "science frames' Object LIKE pattern")


@checked
class RunParams:
    """What ``gmosred run`` makes of the science frames."""

    until: str = param("measure", "last step of the science frames' recipe",
                       choices=("reduce", "rmfringe", "mosaic", "measure"))


@dataclass
class Task:
    """One product to make: the step, its output, its inputs and calibrations {kind: path}."""

    step: str
    output: Path
    inputs: list[str]
    calibrations: dict = field(default_factory=dict)
    label: str = ""
    skipped: dict = field(default_factory=dict)  # {step of the recipe not applied to the frame: why}
    missing: dict = field(default_factory=dict)  # {optional calibration the task goes without: why}

    def needs(self) -> list[str]:
        return list(self.inputs) + [c for c in self.calibrations.values() if c]


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # one line for the plan and the summary
    sections: tuple[str, ...]  # configuration sections the step reads, in the order of its arguments
    run: Callable[[Task, dict], Path]  # makes task.output from task.inputs and the sections' parameters
    per: str = "frame"  # "group": one product from all frames of a group (a master); "frame": one per input
    match: str | None = None  # the calibration-match rows that group its frames (group steps)
    calibrations: tuple[tuple[str, bool], ...] = ()  # (step whose product it uses, required?)
    output: Callable[..., str] = lambda inp, p: stem(inp)  # name of a product: (input or group, params)
    missing: str = ""  # what a frame lacks when no product of this step fits it, and what would satisfy it
    #: why the step does not apply to a frame (an observing-log row), under the step's parameters; None: it does
    applies: Callable[[dict, dict], str | None] = lambda row, p: None
    #: the calibration a user gave for a frame (a path), instead of one the plan makes
    given: Callable[[dict, dict], str | None] = lambda row, p: None


# ------------------------------------------------------------------ file steps called by the runner
def _bias(task: Task, p: dict) -> Path:
    from ..calibrate.bias import make_master_bias

    return make_master_bias(task.inputs, task.output, p["bias"], overscan=p["overscan"])


def _flat(task: Task, p: dict) -> Path:
    from ..calibrate.flat import make_master_flat

    return make_master_flat(task.inputs, task.output, task.calibrations.get("bias"), p["flat"],
                            overscan=p["overscan"], combine=p["flat_combine"])


def _reduce(task: Task, p: dict) -> Path:
    from ..calibrate.reduce import reduce_frame

    return reduce_frame(task.inputs[0], task.output.parent, task.calibrations.get("bias"),
                        task.calibrations.get("flat"), p["reduce"], overscan=p["overscan"])


def _fringe(task: Task, p: dict) -> Path:
    from ..calibrate.fringe import make_fringe_file

    return make_fringe_file(task.inputs, task.output, p["fringe"], combine=p["fringe_combine"])


def _rmfringe(task: Task, p: dict) -> Path:
    from ..calibrate.fringe import remove_fringe_file

    return remove_fringe_file(task.inputs[0], task.output.parent, task.calibrations.get("fringe"), p["fringe"],
                              missing=task.missing.get("fringe", ""))


def _fringing(row: dict, p: dict) -> str | None:
    from ..calibrate.fringe import not_fringing

    return not_fringing(row["DetID"], row["Filter2"], p["fringe"])


def _fringe_made(row: dict, p: dict) -> str | None:
    """Why no fringe frame is made for a frame's group: it does not fringe, or the user gave one."""
    return _fringing(row, p) or ("a fringe frame is given ([fringe] frame)" if _fringe_given(row, p) else None)


def _fringe_given(row: dict, p: dict) -> str | None:
    from ..calibrate.fringe import given_fringe

    return given_fringe(row["Filter2"], p["fringe"])


def _mosaic(task: Task, p: dict) -> Path:
    from ..mosaic import mosaic_file

    return mosaic_file(task.inputs[0], task.output.parent, p["mosaic"])


def _measure(task: Task, p: dict) -> Path:
    from ..measure.step import measure_file

    return measure_file(task.inputs[0], task.output.parent, p)


#: The configuration sections and their defaults (a section may serve several steps: the overscan).
SECTIONS: dict[str, object] = {
    "run": RunParams(),
    "select": SelectParams(),
    "overscan": OverscanParams(),
    "bias": CombineParams(),
    "flat": FlatParams(),
    "flat_combine": FLAT_COMBINE,
    "reduce": ReduceParams(),
    "fringe": FringeParams(),
    "fringe_combine": FRINGE_COMBINE,
    "mosaic": MosaicParams(),
    "measure": MeasureParams(),
    "detect": DetectParams(),
    "astrometry": AstrometryParams(),
    "photometry": PhotometryParams(),
}

STEPS: dict[str, Step] = {s.name: s for s in (
    Step("bias", "master bias (gbias)", ("overscan", "bias"), _bias, per="group", match="bias",
         output=lambda group, p: f"MCbias{group.tag}.fits",
         missing="have no biases: add BIAS frames of that instrument, detector, binning, ROI and read mode"),
    Step("flat", "master twilight flat (giflat)", ("overscan", "flat", "flat_combine"), _flat, per="group",
         match="flat", calibrations=(("bias", False),), output=lambda group, p: f"MCflat_{group.band}{group.tag}.fits",
         missing="have no twilight flats in {band}: add them (OBJECT Twilight, OBSCLASS dayCal)"),
    Step("reduce", "basic reduction (gireduce)", ("overscan", "reduce"), _reduce,
         calibrations=(("bias", True), ("flat", True)), output=lambda inp, p: f"{p['reduce'].prefix}{stem(inp)}.fits"),
    Step("fringe", "fringe frame (gifringe)", ("fringe", "fringe_combine"), _fringe, per="group", match="fringe",
         output=lambda group, p: f"MCfringe_{group.band}{group.tag}.fits", applies=_fringe_made,
         missing="have no fringe frame in {band}: give one ([fringe] frame)"),
    Step("rmfringe", "fringe removal (girmfringe)", ("fringe",), _rmfringe, calibrations=(("fringe", False),),
         output=lambda inp, p: f"{p['fringe'].prefix}{stem(inp)}.fits", applies=_fringing, given=_fringe_given),
    Step("mosaic", "CCDs into one plane (gmosaic)", ("mosaic",), _mosaic,
         output=lambda inp, p: f"{p['mosaic'].prefix}{stem(inp)}.fits"),
    Step("measure", "sources, WCS on Gaia, zero point", ("measure", "detect", "astrometry", "photometry"), _measure,
         output=lambda inp, p: f"{p['measure'].prefix}{stem(inp)}.fits"),
)}

#: Recipes: the observing log's kind of frame (``obslog.select`` kinds) -> its steps, in order. The
#: recipes run in this order, so a calibration's recipe comes before the recipes that use it.
RECIPES: dict[str, tuple[str, ...]] = {
    "bias": ("bias",),
    "twiFlat": ("flat",),
    "sciImg": ("reduce", "fringe", "rmfringe", "mosaic", "measure"),
}

#: The step commands' and API functions' parameters: (configuration section, option prefix); e.g.
#: ``gmosred bias --overscan-mode row --lsigma 2.5`` and ``gmosred.bias(..., overscan_mode="row", lsigma=2.5)``.
OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "bias": (("overscan", "overscan_"), ("bias", "")),
    "flat": (("overscan", "overscan_"), ("flat", ""), ("flat_combine", "")),
    "reduce": (("overscan", "overscan_"), ("reduce", "")),
    "fringe": (("fringe", ""), ("fringe_combine", "combine_")),
    "rmfringe": (("fringe", ""),),
    "mosaic": (("mosaic", ""),),
    "measure": (("measure", ""), ("detect", "detect_"), ("astrometry", "astrometry_"), ("photometry", "photometry_")),
}


def parameters(step: str, given: dict, flag=lambda name: name) -> dict:
    """{section: parameters} of a step command from the defaults and ``given`` ({prefixed field: value};
    None = default). An unknown name or a bad value raises naming it as ``flag(name)`` shows it."""
    from dataclasses import fields, replace

    from ..errors import GmosredError
    from ..params import ParameterError

    out, used = {}, set()
    for section, prefix in OPTIONS[step]:
        values = {}
        for f in fields(SECTIONS[section]):
            if given.get(prefix + f.name) is not None:
                values[f.name] = given[prefix + f.name]
                used.add(prefix + f.name)
        try:
            out[section] = replace(SECTIONS[section], **values)
        except ParameterError as e:
            key, _, rest = e.bare.partition(" = ")
            raise GmosredError(f"{flag(prefix + key)} = {rest}") from None
    unknown = sorted(set(k for k, v in given.items() if v is not None) - used)
    if unknown:
        known = [prefix + f.name for section, prefix in OPTIONS[step] for f in fields(SECTIONS[section])]
        raise GmosredError(f"{step}: unknown parameter(s) {', '.join(map(flag, unknown))}; known: "
                           f"{', '.join(map(flag, known))}")
    return out


#: The date selection of each recipe's frames (a SelectParams field).
DATES = {"bias": "bias_dates", "twiFlat": "flat_dates", "sciImg": "science_dates"}


def make(name: str, inputs, *, params: dict, output=None, outdir=".", calibrations: dict | None = None) -> Path:
    """One product of a step outside a plan (the step commands and the Python API): the step's own file
    function; the output is named as the pipeline names it (in ``outdir``) unless ``output`` is given."""
    step = STEPS[name]
    inputs = [str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if output is None:
        if step.per == "group":
            raise ValueError(f"{name}: give the output's name")
        output = Path(outdir) / step.output(inputs[0], params)
    cals = {kind: str(path) for kind, path in (calibrations or {}).items() if path}
    return step.run(Task(name, Path(output), inputs, cals), params)


def step_params(step: Step, cfg) -> dict:
    """{section: parameters} of a step under a configuration."""
    return {s: cfg[s] for s in step.sections}
