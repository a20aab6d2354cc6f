"""Choosing a peer's knobs without reading the test window.

The last `days` of the train window become a validation window: the peer is fitted on what came before it
and scored on it with the protocol's own users, truth and metrics; the knobs with the best mean of NDCG@k
over all items and over novel items win (one objective for both columns the target reads; a window
without novel purchases reads the first alone), and are then frozen and refitted on the whole train
window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoring.evaluation import peers
from scoring.evaluation.protocol import Split, per_user_metrics, split


def validation_split(outer: Split, days: int) -> Split:
    """The protocol's split of the train window alone: train before (cut - days), validate after."""
    cut = outer.cut - pd.Timedelta(days=days)
    return split(outer.train, cut=str(cut))


def objective(scores: np.ndarray, validation: Split, k: int) -> float:
    """Mean of NDCG@k over all items and over novel items on the validation window."""
    columns = [per_user_metrics(scores, validation, view, k, ["ndcg"])["ndcg"] for view in ("all", "novel")]
    return float(np.mean([column.mean() for column in columns if len(column)]))


def choose(
    scored: Iterable[tuple[Any, np.ndarray]], grid: Sequence[Any], validation: Split, k: int
) -> tuple[Any, list[tuple[Any, float]]]:
    """The grid point with the best validation objective (the first in `grid` order on a tie), and every
    point's objective in `grid` order. `scored` gives each point with its scores in any order, so a peer
    may share work between points (peers.grid_scores)."""
    found = {params: objective(scores, validation, k) for params, scores in scored}
    tried = [(params, found[params]) for params in grid]
    best = max(tried, key=lambda pair: pair[1])[0]
    return best, tried


def describe(params: Any) -> dict:
    """A grid point as the report's JSON records it."""
    if dataclasses.is_dataclass(params):
        return dataclasses.asdict(params)
    return {"value": params}


def tune_on_window(lines: pd.DataFrame, cut: pd.Timestamp, k: int, ease_max_items: int) -> dict[str, Any]:
    """The scoring run's own tuning of its peer-model sources: each peer's grid (peers.PEER_GRIDS) scored
    on the label window (purchases from `cut` on, users active on both sides), EASE on the item head the
    source is fitted on; the winners returned by peer name. Returns {} when the window has no such
    user."""
    window = split(lines, cut=str(cut))
    if not len(window.users):
        return {}
    return {
        name: choose(peers.grid_scores(name, window, grid, ease_max_items), grid, window, k)[0]
        for name, (_, grid) in peers.PEER_GRIDS.items()
    }


def tuned_peers(split: Split, k: int, validation_days: int) -> dict[str, tuple[np.ndarray, dict]]:
    """EASE, time-decayed repurchase and TIFU-KNN, each with the knobs that did best on a validation window
    carved from the end of the train window (validation_split), refitted on the whole train
    window: the test window is never read to choose anything."""
    validation = validation_split(split, validation_days)
    out = {}
    for name, (fit, grid) in peers.PEER_GRIDS.items():
        params, _ = choose(peers.grid_scores(name, validation, grid), grid, validation, k)
        out[name] = (fit(split, params), describe(params))
    return out
