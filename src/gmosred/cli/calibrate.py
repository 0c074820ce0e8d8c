"""The step commands ``gmosred bias``, ``flat``, ``reduce``, ``mosaic``; their options derive from the step table."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import inputs


#: The commands whose options derive from the step table (pipeline.steps.OPTIONS; named here so that
#: building the parser imports nothing heavy: a test holds the two equal).
STEP_COMMANDS = ("bias", "flat", "reduce", "mosaic")


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


def bias(args) -> int:
    from ..calibrate.bias import make_master_bias

    p = _step_params(args, "bias")
    out = make_master_bias(inputs(args.files), args.output, p["bias"], overscan=p["overscan"])
    print(f"wrote {out}")
    return 0


def flat(args) -> int:
    from ..calibrate.flat import make_master_flat
    from ..frame.model import filter_name, read_raw

    files = inputs(args.files)
    p = _step_params(args, "flat")
    output = args.output or f"MCflat_{filter_name(read_raw(files[0]).phu)}.fits"
    out = make_master_flat(files, output, bias=args.bias, params=p["flat"], overscan=p["overscan"],
                           combine=p["flat_combine"])
    print(f"wrote {out}")
    return 0


def _each(args, fn, jobs_args, verb: str) -> int:
    from ..pipeline.runners import run_each

    done, failed = run_each(fn, jobs_args, desc=verb, failed=f"not {verb}", jobs=args.jobs)
    print(f"{verb} {len(done)} frame(s) into {args.outdir}" + (f"; {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def reduce(args) -> int:
    p = _step_params(args, "reduce")
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    return _each(args, _reduce_one, [(f, args.outdir, args.bias, args.flat, p) for f in inputs(args.files)],
                 "reduced")


def _reduce_one(path, outdir, bias, flat, p):
    from ..calibrate.reduce import reduce_frame

    return reduce_frame(path, outdir, bias, flat, p["reduce"], overscan=p["overscan"])


def mosaic(args) -> int:
    from ..mosaic import mosaic_file

    p = _step_params(args, "mosaic")
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    return _each(args, mosaic_file, [(f, args.outdir, p["mosaic"]) for f in inputs(args.files)], "mosaicked")
