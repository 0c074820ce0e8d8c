"""The pipeline's configuration: every parameter of every step, defaulting to the cookbook's choices.

Layers: the dataclass defaults below <- a TOML file (``--config``) <- command-line options. Sections
and keys are the step parameter dataclasses' fields; unknown keys are errors.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .calibrate.bias import BiasParams
from .calibrate.flat import FlatParams
from .calibrate.overscan import OverscanParams
from .calibrate.reduce import ReduceParams
from .combine import CombineParams
from .errors import GmosredError


@dataclass(frozen=True)
class SelectParams:
    """Which frames the pipeline takes from the observing log (the cookbook's date selections)."""

    bias_dates: str = ""  # '' = any; 'YYYY-MM-DD:YYYY-MM-DD', a GLOB pattern or one date
    flat_dates: str = ""
    science_dates: str = ""
    objects: str = "%"  # Object LIKE pattern for science frames


@dataclass(frozen=True)
class MosaicParams:
    interpolant: str = "linear"
    tile: bool = False


@dataclass(frozen=True)
class Config:
    select: SelectParams = field(default_factory=SelectParams)
    overscan: OverscanParams = field(default_factory=OverscanParams)
    bias: CombineParams = field(default_factory=lambda: BiasParams().combine)
    flat: FlatParams = field(default_factory=FlatParams)
    flat_combine: CombineParams = field(default_factory=lambda: FlatParams().combine)
    reduce: ReduceParams = field(default_factory=ReduceParams)
    mosaic: MosaicParams = field(default_factory=MosaicParams)

    def bias_params(self) -> BiasParams:
        return BiasParams(overscan=self.overscan, combine=self.bias)

    def flat_params(self) -> FlatParams:
        return replace(self.flat, overscan=self.overscan, combine=self.flat_combine)

    def reduce_params(self) -> ReduceParams:
        return replace(self.reduce, overscan=self.overscan)


def _section(obj) -> dict:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            continue  # nested step parameters are configured in their own section
        out[f.name] = v
    return out


def to_toml(cfg: Config) -> str:
    """The configuration as TOML (``gmosred config``); None values are shown commented out."""
    lines = ["# gmosred pipeline configuration (defaults: the cookbook's choices)"]
    for f in fields(cfg):
        lines.append(f"\n[{f.name}]")
        for key, value in _section(getattr(cfg, f.name)).items():
            if value is None:
                lines.append(f"# {key} =  (automatic)")
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def load(path: Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML file, then ``overrides`` ({section: {key: value}})."""
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise GmosredError(f"{path}: not a readable TOML configuration ({e})") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    cfg = Config()
    known = {f.name for f in fields(cfg)}
    changes = {}
    for section, values in data.items():
        if section not in known:
            raise GmosredError(f"configuration: unknown section [{section}]; known: {', '.join(sorted(known))}")
        current = getattr(cfg, section)
        allowed = set(_section(current))
        bad = set(values) - allowed
        if bad:
            raise GmosredError(f"configuration [{section}]: unknown key(s) {', '.join(sorted(bad))}; "
                               f"known: {', '.join(sorted(allowed))}")
        try:
            changes[section] = replace(current, **values)
        except (TypeError, ValueError) as e:
            raise GmosredError(f"configuration [{section}]: {e}") from None
    return replace(cfg, **changes)
