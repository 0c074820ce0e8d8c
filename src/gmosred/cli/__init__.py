"""The ``gmosred`` command."""
from .main import build_parser, main  # noqa: F401  (the entry point and its parser)
