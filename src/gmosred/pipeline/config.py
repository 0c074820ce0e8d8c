"""The pipeline's configuration: one section per parameter dataclass of the step table.

Layers: the dataclass defaults <- a TOML file (``--config``) <- ``--set section.key=value``. Every
value is checked when it is loaded (type, range, choices, date syntax); a message names the section,
the key, the value and what is allowed. ``gmosred config`` prints every key with its documentation.
"""
from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path

from ..errors import GmosredError
from ..params import ParameterError, doc
from .steps import SECTIONS


class Config:
    """The parameters of every section, by name (``cfg["mosaic"].interpolant`` or ``cfg.mosaic``)."""

    def __init__(self, sections: dict | None = None):
        self._sections = dict(SECTIONS)
        for name, value in (sections or {}).items():
            if name not in SECTIONS:
                raise GmosredError(f"configuration: unknown section [{name}]; known: {', '.join(SECTIONS)}")
            self._sections[name] = value

    def __getitem__(self, name: str):
        return self._sections[name]

    def __getattr__(self, name: str):
        try:
            return self.__dict__["_sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    def items(self):
        return self._sections.items()

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and self._sections == other._sections

    def __repr__(self) -> str:
        return f"Config({self._sections!r})"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def to_toml(cfg: Config) -> str:
    """The configuration as TOML with each key's documentation (``gmosred config``); keys whose value
    is automatic (None) are shown commented out."""
    lines = ["# gmosred pipeline configuration (defaults: the cookbook's choices)"]
    for name, params in cfg.items():
        lines.append(f"\n[{name}]  # {type(params).__doc__.strip().splitlines()[0]}")
        for f in fields(params):
            value = getattr(params, f.name)
            lines.append(f"# {doc(f)}")
            lines.append(f"# {f.name} =  (automatic)" if value is None else f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def parse_set(items) -> dict:
    """``["mosaic.interpolant=cubic", "bias.lsigma=2.5"]`` -> {section: {key: value}} (values in TOML
    syntax; a bare word is a string)."""
    out: dict = {}
    for item in items or ():
        target, sep, text = item.partition("=")
        section, dot, key = target.strip().partition(".")
        if not sep or not dot or not key:
            raise GmosredError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. mosaic.interpolant=cubic")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out.setdefault(section, {})[key] = value
    return out


def load(path: Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML file, then ``overrides`` ({section: {key: value}}; None values ignored)."""
    data: dict = {}
    where = "configuration"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise GmosredError(f"{path}: not a readable TOML configuration ({e})") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    sections = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise GmosredError(f"{where}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise GmosredError(f"{where}: [{section}] must be a section of keys")
        current = SECTIONS[section]
        allowed = [f.name for f in fields(current)]
        bad = sorted(set(values) - set(allowed))
        if bad:
            raise GmosredError(f"{where} [{section}]: unknown key(s) {', '.join(bad)}; known: {', '.join(allowed)}")
        try:
            sections[section] = replace(current, **values)
        except ParameterError as e:
            raise GmosredError(f"{where} [{section}] {e.bare}") from None
    cfg = Config(sections)
    _check_dates(cfg, where)
    return cfg


def _check_dates(cfg: Config, where: str) -> None:
    from ..obslog.select import check_dates

    for f in fields(cfg.select):
        if f.name.endswith("_dates") and getattr(cfg.select, f.name):
            try:
                check_dates(getattr(cfg.select, f.name))
            except GmosredError as e:
                raise GmosredError(f"{where} [select] {f.name}: {e}") from None
