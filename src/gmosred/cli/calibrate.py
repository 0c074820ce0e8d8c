"""The step commands ``gmosred bias``, ``flat``, ``reduce``, ``fringe``, ``rmfringe``, ``mosaic``, ``measure``; their
options derive from the step table."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import inputs


#: The commands whose options derive from the step table (pipeline.steps.OPTIONS; named here so that
#: building the parser imports nothing heavy: a test holds the two equal).
STEP_COMMANDS = ("bias", "flat", "reduce", "fringe", "rmfringe", "mosaic", "measure")


def add_step_options(s, command: str) -> None:
    import typing
    from dataclasses import fields

    from ..params import doc
    from ..pipeline.steps import OPTIONS, SECTIONS

    for section, prefix in OPTIONS[command]:
        defaults = SECTIONS[section]
        hints = typing.get_type_hints(type(defaults))
        g = s.add_argument_group(f"[{section}] parameters (as in gmosred config)")
        for f in fields(defaults):
            flag = _flag(prefix + f.name)
            value = getattr(defaults, f.name)
            text = f"{doc(f)}; default: {'automatic' if value is None else value}".replace("%", "%%")
            kind = next((t for t in (bool, int, float, str) if t in typing.get_args(hints[f.name]) + (hints[f.name],)))
            if kind is bool:
                g.add_argument(flag, dest=f"param:{prefix}{f.name}", action=argparse.BooleanOptionalAction, help=text)
            else:
                g.add_argument(flag, dest=f"param:{prefix}{f.name}", type=kind, help=text, metavar=f.name.upper(),
                               choices=f.metadata.get("choices") if kind is str and f.metadata.get("choices") else None)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _step_params(args, command: str) -> dict:
    """{section: parameters} from the defaults and the options given."""
    from ..pipeline.steps import parameters

    given = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("param:")}
    return parameters(command, given, flag=_flag)


def _output_folder(path, option: str) -> None:
    """Stop before any work when the output's folder cannot be written."""
    from ..frame.model import writable_folder

    writable_folder(path, f"give another {option}")


def bias(args) -> int:
    from ..pipeline.steps import make

    _output_folder(Path(args.output).parent, "--output")
    out = make("bias", inputs(args.files), params=_step_params(args, "bias"), output=args.output)
    print(f"wrote {out}")
    return 0


def flat(args) -> int:
    from ..frame.model import filter_name, read_raw
    from ..pipeline.steps import make

    files = inputs(args.files)
    p = _step_params(args, "flat")
    output = args.output or f"MCflat_{filter_name(read_raw(files[0]).phu)}.fits"
    _output_folder(Path(output).parent, "--output")
    out = make("flat", files, params=p, output=output, calibrations={"bias": args.bias})
    print(f"wrote {out}")
    return 0


def _each(args, step: str, calibrations: dict, verb: str) -> int:
    """A per-frame step over every file given, in ``--jobs`` processes; a bad file is one line."""
    from functools import partial

    from ..pipeline.runners import run_each
    from ..pipeline.steps import make

    p = _step_params(args, step)
    _output_folder(args.outdir, "--outdir")
    one = partial(make, step, params=p, outdir=args.outdir, calibrations=calibrations)
    done, failed = run_each(one, [(f,) for f in inputs(args.files)], desc=verb, failed=f"not {verb}", jobs=args.jobs)
    print(f"{verb} {len(done)} frame(s) into {args.outdir}" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def reduce(args) -> int:
    return _each(args, "reduce", {"bias": args.bias, "flat": args.flat}, "reduced")


def fringe(args) -> int:
    from astropy.io import fits

    from ..frame.model import filter_name
    from ..instruments import filter_band
    from ..pipeline.steps import make

    files = inputs(args.files)
    output = args.output or f"MCfringe_{filter_band(filter_name(fits.getheader(files[0], 0)))}.fits"
    _output_folder(Path(output).parent, "--output")
    out = make("fringe", files, params=_step_params(args, "fringe"), output=output)
    print(f"wrote {out}")
    return 0


def rmfringe(args) -> int:
    return _each(args, "rmfringe", {"fringe": args.fringe}, "defringed")


def mosaic(args) -> int:
    return _each(args, "mosaic", {}, "mosaicked")


def measure(args) -> int:
    return _each(args, "measure", {}, "measured")
