"""Master calibrations and the basic reduction of science frames (gbias, giflat, gireduce)."""
