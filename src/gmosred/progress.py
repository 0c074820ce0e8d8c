"""Progress bars for long steps (one bar per step, on stderr)."""
from __future__ import annotations

import os
import sys


def progress(iterable=None, *, desc: str, total: int | None = None, enabled: bool | None = None, unit: str = "file"):
    """Wrap ``iterable`` in a bar; off when ``enabled`` is False or GMOSRED_NO_PROGRESS is set."""
    from tqdm import tqdm

    if enabled is None:
        enabled = not os.environ.get("GMOSRED_NO_PROGRESS")
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=True)
