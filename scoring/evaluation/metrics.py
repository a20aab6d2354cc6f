"""Ranking metrics at a cut-off k, one user at a time, and list-level metrics: pure functions, no I/O.

Each per-user metric takes the user's `relevant` items (any collection) and the `recommended` items
(ranked best first, without repeats; only the first k count) and returns a float. Gains are binary, as in
the top-k metrics of microsoft/recommenders (`python_evaluation.py`). A user with no relevant item has no
recall, F1, NDCG or average precision (nan is returned); the protocol leaves such users out before
averaging. `graded_ndcg_at_k` takes graded gains instead (search relevance judgments).

The list-level metrics describe what is recommended rather than how well it matches the truth:
catalogue coverage (over all lists), intra-list diversity by category and novelty (one list each).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def _check(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def hits_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> np.ndarray:
    """1.0 where the item at each of the first k ranks is relevant, else 0.0 (as long as the list, <= k)."""
    _check(k)
    return np.array([item in relevant for item in list(recommended)[:k]], dtype=float)


def precision_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """Relevant items among the first k, divided by k (a shorter list is not rewarded)."""
    return float(hits_at_k(relevant, recommended, k).sum() / k)


def recall_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """Relevant items among the first k, divided by the number of relevant items."""
    if not relevant:
        return float("nan")
    return float(hits_at_k(relevant, recommended, k).sum() / len(relevant))


def f1_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """The harmonic mean of precision@k and recall@k (0.0 when neither has a hit)."""
    recall = recall_at_k(relevant, recommended, k)
    if np.isnan(recall):
        return recall
    precision = precision_at_k(relevant, recommended, k)
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def hit_ratio_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """1.0 when at least one of the first k is relevant, else 0.0."""
    return float(hits_at_k(relevant, recommended, k).any())


def ndcg_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """DCG of the first k (binary gain, log2(rank + 1) discount) over the DCG of an ideal list, which puts
    min(#relevant, k) relevant items first."""
    if not relevant:
        return float("nan")
    hits = hits_at_k(relevant, recommended, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(len(relevant), k)].sum()
    return float((hits * discounts[: len(hits)]).sum() / ideal)


def graded_ndcg_at_k(gains: Mapping[Hashable, float], recommended: Sequence[Hashable], k: int) -> float:
    """NDCG@k with graded gains (search relevance: gain = grade - 1): DCG of the first k with a linear gain
    and log2(rank + 1) discount, over the DCG of the judged items sorted by gain. An item without a gain
    counts 0 (unjudged = irrelevant); a query whose gains are all 0 has no NDCG (nan)."""
    _check(k)
    ideal_gains = np.sort(np.fromiter((g for g in gains.values() if g > 0), dtype=float))[::-1][:k]
    if not len(ideal_gains):
        return float("nan")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    got = np.array([max(float(gains.get(item, 0.0)), 0.0) for item in list(recommended)[:k]], dtype=float)
    return float((got * discounts[: len(got)]).sum() / (ideal_gains * discounts[: len(ideal_gains)]).sum())


def average_precision_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """Mean of precision@i over the ranks i <= k that hold a relevant item, divided by min(#relevant, k)
    (MAP@k is its mean over users)."""
    if not relevant:
        return float("nan")
    hits = hits_at_k(relevant, recommended, k)
    precisions = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precisions * hits).sum() / min(len(relevant), k))


def reciprocal_rank_at_k(relevant: Collection[Hashable], recommended: Sequence[Hashable], k: int) -> float:
    """1 / the rank of the first relevant item among the first k, 0.0 when none is (MRR@k over users)."""
    hits = hits_at_k(relevant, recommended, k)
    found = np.flatnonzero(hits)
    return float(1.0 / (found[0] + 1)) if len(found) else 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest finite scores of a row, best first (-inf or nan: never recommended)."""
    _check(k)
    scores = np.asarray(scores)
    top = np.argpartition(-scores, k)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top])]
    return top[np.isfinite(scores[top])]


def catalogue_coverage(lists: Iterable[Sequence[Hashable]], n_items: int) -> float:
    """Share of the catalogue's `n_items` that appear in at least one list."""
    if n_items < 1:
        raise ValueError(f"the catalogue needs at least one item, got {n_items}")
    return len({item for items in lists for item in items}) / n_items


def intra_list_diversity(recommended: Sequence[Hashable], categories: Mapping[Hashable, Hashable]) -> float:
    """Share of the list's unordered pairs whose two items are in different categories (0: one category,
    1: every item in its own). An item without a category stands for its own category, so a catalogue with
    no categories at all scores every list of distinct items 1.0. A list of fewer than two items has no
    pairs (nan)."""
    n = len(recommended)
    if n < 2:
        return float("nan")
    counts = Counter(categories.get(item, item) for item in recommended)
    same = sum(c * (c - 1) // 2 for c in counts.values())
    return 1.0 - same / (n * (n - 1) // 2)


def popularity_ranks(counts: Sequence[float]) -> np.ndarray:
    """Each item's rank by popularity (1 = the most bought); tied items share their average rank, so the
    never-bought items all sit together at the bottom."""
    return pd.Series(np.asarray(counts, dtype=float)).rank(ascending=False, method="average").to_numpy()


def novelty(recommended: Sequence[Hashable], ranks: Mapping[Hashable, float] | np.ndarray) -> float:
    """Mean popularity rank of the recommended items (higher: less popular, more novel); nan for an empty
    list. `ranks` maps an item to its rank (an array when items are positions, as in the protocol)."""
    if not len(recommended):
        return float("nan")
    return float(np.mean([ranks[item] for item in recommended]))
