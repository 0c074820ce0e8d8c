"""Pieces the astrometric and photometric fits share: one pair per source or star, and an intrinsic scatter."""
from __future__ import annotations

import numpy as np


def nearest_pairs(keys, others, dist) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (``keys[i]``, ``others[i]``) at ``dist[i]``, keeping for each key only its nearest pair;
    returns (keys, others) of the pairs kept, nearest first."""
    keys, others = np.asarray(keys, int), np.asarray(others, int)
    order = np.argsort(dist)
    _, first = np.unique(keys[order], return_index=True)
    kept = order[np.sort(first)]
    return keys[kept], others[kept]


def intrinsic_scatter(statistic, target: float, high: float) -> float:
    """The scatter s >= 0 at which ``statistic(s)`` (decreasing in s) falls to ``target``, by bisection between 0 and
    ``high``; 0 when the quoted errors alone already bring it there."""
    if statistic(0.0) <= target:
        return 0.0
    lo, hi = 0.0, high
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if statistic(mid) > target else (lo, mid)
    return hi
