"""A synthetic GMOS-S observing run modelled on GS-2006B-Q-18 (M8), with its truth.

``simulate_run(outdir, size, seed)`` writes archive-style raw files to ``outdir/raw`` and
everything it made to ``outdir/truth``; ``load_truth(outdir)`` reads the truth back and can
recompute the noiseless model of any frame (see :mod:`gmosred.simulate.truth`).
"""
from .run import simulate_run  # noqa: F401
from .truth import Truth, load_truth  # noqa: F401
