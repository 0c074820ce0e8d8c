"""Step parameters: frozen dataclasses whose fields carry their documentation and their allowed values.

Each step declares its parameters once, as a dataclass of :func:`param` fields decorated with
:func:`checked`; the configuration file, ``gmosred config``, the command-line options and the
manifest's hashes are derived from them. A value is checked when the dataclass is made (type, range,
choices), and the message names the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, fields

from .errors import GmosredError


class ParameterError(GmosredError):
    """A parameter value outside what its field allows; ``bare`` is the message without the class name."""

    def __init__(self, message: str, bare: str | None = None):
        super().__init__(message)
        self.bare = bare or message


def param(default, doc: str, *, choices: tuple | None = None, low=None, high=None, low_open: bool = False,
          hashed: bool = True):
    """A documented parameter field: ``low <= value <= high`` (``low < value`` with ``low_open``),
    value in ``choices``; ``hashed=False`` for settings that cannot change a product's bytes
    (threads, memory bands): they do not enter the manifest's hashes."""
    meta = {"doc": doc, "choices": choices, "low": low, "high": high, "low_open": low_open, "hashed": hashed}
    return dataclasses.field(default=default, metadata=meta)


def checked(cls):
    """Class decorator: a frozen dataclass whose fields are checked when an instance is made."""
    own = cls.__dict__.get("__post_init__")
    hints: dict = {}

    def __post_init__(self):
        if not hints:
            hints.update(typing.get_type_hints(cls))
        try:
            for f in fields(self):
                _check(f, hints[f.name], getattr(self, f.name))
            if own is not None:
                own(self)
        except (ParameterError, ValueError) as e:
            raise ParameterError(f"{cls.__name__}: {e}", str(e)) from None

    cls.__post_init__ = __post_init__
    return dataclass(frozen=True)(cls)


def _allowed(tp) -> tuple[type, ...]:
    """The runtime types a hint allows (``float | None`` -> (float, NoneType))."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return tuple(t for a in typing.get_args(tp) for t in _allowed(a))
    if tp is float:
        return (float, int)
    return (typing.get_origin(tp) or tp,)


def _check(f, tp, value) -> None:
    name = f.name
    ok = _allowed(tp)
    if isinstance(value, bool) and bool not in ok or not isinstance(value, ok):
        want = " or ".join(sorted({"a number" if t in (int, float) else "none" if t is type(None) else t.__name__
                                   for t in ok}))
        if int in ok and float not in ok:
            want = want.replace("a number", "a whole number")
        raise ParameterError(f"{name} = {value!r}: must be {want}")
    if value is None:
        return
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        raise ParameterError(f"{name} = {value!r}: choose from {', '.join(map(str, m['choices']))}")
    low, high = m.get("low"), m.get("high")
    if low is not None and (value <= low if m.get("low_open") else value < low):
        raise ParameterError(f"{name} = {value!r}: must be {'>' if m.get('low_open') else '>='} {low}")
    if high is not None and value > high:
        raise ParameterError(f"{name} = {value!r}: must be <= {high}")


def doc(f) -> str:
    """A field's documentation with what it allows."""
    m = f.metadata
    text = m.get("doc", "")
    if m.get("choices"):
        text += f" ({' | '.join(map(str, m['choices']))})"
    elif m.get("low") is not None or m.get("high") is not None:
        lo = "" if m.get("low") is None else f"{'>' if m.get('low_open') else '>='} {m['low']}"
        hi = "" if m.get("high") is None else f"<= {m['high']}"
        text += f" ({', '.join(x for x in (lo, hi) if x)})"
    return text


def hashed_values(params) -> dict:
    """The fields of a parameter set that can change a product (the manifest hashes these)."""
    return {f.name: getattr(params, f.name) for f in fields(params) if f.metadata.get("hashed", True)}


def default_of(f):
    return f.default if f.default is not MISSING else f.default_factory()
