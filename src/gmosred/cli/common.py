"""What the command's verbs share: tables and @list files."""
from __future__ import annotations

from pathlib import Path


def print_table(cols, rows) -> None:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def inputs(items) -> list[str]:
    """File arguments, with IRAF-style @list files expanded."""
    out = []
    for item in items:
        if item.startswith("@"):
            lst = Path(item[1:])
            if not lst.exists():
                raise SystemExit(f"gmosred: error: list file {lst} not found")
            out += [line.strip() for line in lst.read_text().splitlines() if line.strip() and not line.startswith("#")]
        else:
            out.append(item)
    return out
