"""Shared set-up for the benchmarks: the full-size simulated run, made once per work folder."""
from __future__ import annotations

from pathlib import Path


def full_run(work: Path):
    """The 2x2 simulated M8 run in ``work/run`` (made if missing) and its truth."""
    from gmosred.simulate import load_truth, simulate_run

    run = Path(work) / "run"
    if not (run / "truth" / "run.json").exists():
        simulate_run(run, size="full", seed=3, jobs=2, show_progress=False)
    return run, load_truth(run)
