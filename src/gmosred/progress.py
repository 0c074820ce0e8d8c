"""Progress bars for long steps (one bar per step, on stderr), and messages that keep to their own lines."""
from __future__ import annotations

import logging
import os
import sys


def progress(iterable=None, *, desc: str, total: int | None = None, enabled: bool | None = None, unit: str = "file"):
    """Wrap ``iterable`` in a bar; off when ``enabled`` is False or GMOSRED_NO_PROGRESS is set."""
    from tqdm import tqdm

    if enabled is None:
        enabled = not os.environ.get("GMOSRED_NO_PROGRESS")
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=True)


class MessageHandler(logging.Handler):
    """Messages on stderr, each on its own line: a progress bar being drawn is lifted off and redrawn
    under the message (tqdm's ``write``), never glued to it."""

    def __init__(self, fmt: str = "gmosred: %(levelname)s: %(message)s"):
        super().__init__()
        self.fmt = fmt

    def format(self, record) -> str:
        return self.fmt % {"levelname": record.levelname.lower(), "message": record.getMessage()}

    def emit(self, record) -> None:
        try:
            text = self.format(record)
            if "tqdm" in sys.modules:  # a bar may be on screen
                from tqdm import tqdm

                tqdm.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)
