"""The one order of every ranked list: the score at a fixed precision, best first, then the item id.

Whatever ranks items orders them by this rule: a candidate source's top k and TIFU-KNN's nearest
neighbours (retrieval/), the ranker's rank features and holdout NDCG, each user's lists and published
candidate pool (scoring/), in one process or in Spark shards. So a list never depends on the order its
rows arrived in (a warehouse rebuilt in another order, a shard's shuffle) nor on float noise below the
precision, and a tie always goes the same way. It lives in retrieval, the lowest layer, so that retrieval
and scoring share it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Scores are compared rounded to this many decimals. The candidate sources' scores are float32 of order
# 1, whose last digit (about 1e-7) is noise; the ranker's probabilities are distinct well above 1e-6.
SCORE_DECIMALS = 6

_KEY = "_ordering_key"


def score_key(scores: np.ndarray | pd.Series) -> np.ndarray:
    """Scores as lists compare them: float64, rounded to SCORE_DECIMALS (NaN stays NaN)."""
    return np.round(np.asarray(scores, dtype=np.float64), SCORE_DECIMALS)


def ordered(frame: pd.DataFrame, by: str, score: str = "score", item: str = "item_id") -> pd.DataFrame:
    """`frame`'s rows grouped by `by` (ascending), each group best first: `score` at SCORE_DECIMALS
    descending, ties to the smaller `item`, missing scores last. The sort is stable and keeps the index,
    so a caller can align the order with the frame it came from."""
    keyed = frame.assign(**{_KEY: -score_key(frame[score])})
    return keyed.sort_values([by, _KEY, item], kind="stable").drop(columns=_KEY)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a matrix, the positions and values of the k best scores, best first: scores compared
    at SCORE_DECIMALS, ties to the smaller position (the smaller item id: catalogues are in id order).

    argpartition keeps it linear; only each row's candidates down to its k-th key, ties included, are
    sorted, which argpartition alone would cut in an arbitrary order.
    """
    k = min(k, scores.shape[1])
    key = -score_key(scores)
    kth = np.partition(key, k - 1, axis=1)[:, k - 1 : k]
    width = int((key <= kth).sum(axis=1).max(initial=k))
    part = np.argpartition(key, width - 1, axis=1)[:, :width]
    order = np.lexsort((part, np.take_along_axis(key, part, axis=1)), axis=1)[:, :k]
    positions = np.take_along_axis(part, order, axis=1)
    return positions, np.take_along_axis(scores, positions, axis=1)
