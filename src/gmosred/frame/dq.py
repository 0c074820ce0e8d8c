"""Gemini data-quality bits (uint16 DQ planes)."""
import numpy as np

GOOD = 0
BAD_PIXEL = 1
NON_LINEAR = 2
SATURATED = 4
COSMIC_RAY = 8
NO_DATA = 16
OVERLAP = 32
UNILLUMINATED = 64
#: Pixels that carry no usable signal.
FAIL = BAD_PIXEL | SATURATED | COSMIC_RAY | NO_DATA

DTYPE = np.uint16

#: What each bit means, for the DQ extensions' headers.
NAMES = {BAD_PIXEL: "bad pixel", NON_LINEAR: "non-linear", SATURATED: "saturated", COSMIC_RAY: "cosmic ray",
         NO_DATA: "no data", OVERLAP: "overlap", UNILLUMINATED: "unilluminated"}
