"""FITS/IRAF image sections: '[x1:x2,y1:y2]', 1-based and inclusive, as GMOS headers write them."""
from __future__ import annotations

import re
from typing import NamedTuple

_SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")


class Section(NamedTuple):
    """A rectangle in 0-based, end-exclusive pixel indices (numpy's convention)."""

    x1: int
    x2: int
    y1: int
    y2: int

    @classmethod
    def parse(cls, text: str) -> "Section":
        """Parse '[x1:x2,y1:y2]'; raises ValueError for anything else (including reversed ranges)."""
        m = _SECTION.match(str(text).strip())
        if not m:
            raise ValueError(f"not an image section: {text!r}")
        x1, x2, y1, y2 = (int(v) for v in m.groups())
        if x1 < 1 or y1 < 1 or x2 < x1 or y2 < y1:
            raise ValueError(f"empty or reversed image section: {text!r}")
        return cls(x1 - 1, x2, y1 - 1, y2)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index for a numpy array: ``data[section.slices]``."""
        return slice(self.y1, self.y2), slice(self.x1, self.x2)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y2 - self.y1, self.x2 - self.x1

    def binned(self, xbin: int, ybin: int) -> "Section":
        """This unbinned section in binned pixels (edges must fall on bin boundaries)."""
        if self.x1 % xbin or self.x2 % xbin or self.y1 % ybin or self.y2 % ybin:
            raise ValueError(f"section {self} does not fall on {xbin}x{ybin} bin boundaries")
        return Section(self.x1 // xbin, self.x2 // xbin, self.y1 // ybin, self.y2 // ybin)

    def __str__(self) -> str:
        return f"[{self.x1 + 1}:{self.x2},{self.y1 + 1}:{self.y2}]"


def parse_binning(ccdsum: str) -> tuple[int, int]:
    """CCDSUM '2 2' -> (xbin, ybin)."""
    parts = str(ccdsum).split()
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"not a CCDSUM value: {ccdsum!r}")
    return int(parts[0]), int(parts[1])
