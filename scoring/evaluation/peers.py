"""The peers Aisle is measured against, each a (evaluated users x items) score matrix on the protocol's
split, computed from the train window's purchases and the catalogue's titles alone: popularity, repurchase
then popularity, item-kNN, implicit ALS, the two content peers that can reach an item nobody has bought
yet (TF-IDF title similarity to the history, and all-MiniLM-L6-v2 zero-shot: the mean of a user's history
against item titles), and the field's strong cheap peers tuned on validation: EASE, time-decayed
repurchase and TIFU-KNN (retrieval/item_models.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from retrieval import candidates as cand
from retrieval import content, item_models
from scoring.evaluation.protocol import Split, user_item_matrix


def popularity(split: Split) -> np.ndarray:
    """Distinct buyers of each item in the train window, the same list for everyone."""
    buyers = split.train.groupby("item_id")["user_id"].nunique()
    counts = buyers.reindex(split.items).fillna(0).to_numpy(dtype=float)
    return np.tile(counts, (len(split.users), 1))


def repurchase_then_popularity(split: Split) -> np.ndarray:
    """A user's past items first (most often bought first), then the popular ones."""
    pop = popularity(split)
    counts = user_item_matrix(split, split.users, binary=False).toarray()
    return np.where(counts > 0, 1e6 * counts, 0.0) + pop / (pop.max() + 1)


def item_knn(split: Split) -> np.ndarray:
    """Item-item cosine similarity on binary purchases, summed over a user's past items."""
    everyone = np.array(sorted(split.train["user_id"].unique()))
    similarity = cand.item_similarity(user_item_matrix(split, everyone))
    return np.asarray((user_item_matrix(split, split.users) @ similarity).todense())


def implicit_als(split: Split, factors: int = 128, seed: int = 0) -> np.ndarray:
    """implicit's ALS on purchase counts."""
    everyone = np.array(sorted(split.train["user_id"].unique()))
    user_factors, item_factors = cand.als_factors(
        user_item_matrix(split, everyone, binary=False), factors, seed
    )
    rows = pd.Index(everyone).get_indexer(split.users)
    return user_factors[rows] @ item_factors.T


def zero_shot_mean_history(split: Split, model_name: str) -> np.ndarray:
    """The base model, no fine-tuning: a user is the mean of their past items' title vectors."""
    from scoring.training.finetune import load_model
    from scoring.training.text_vectors import encode

    model = load_model(model_name, "cpu", 64)
    vectors = encode(model, split.titles.tolist(), 256, "item titles (zero-shot)")
    mine = user_item_matrix(split, split.users)
    users = np.asarray(mine @ vectors) / np.maximum(np.asarray(mine.sum(axis=1)), 1)
    return users @ vectors.T


def tfidf_title_history(split: Split) -> np.ndarray:
    """TF-IDF of the catalogue's titles (retrieval/content.py: words and word pairs, sublinear counts), a
    user the mean of their past items' vectors, scored by cosine: the lexical content peer, which reads a
    new item's title as the encoders do."""
    return content.history(user_item_matrix(split, split.users), content.title_vectors(split.titles))


def decayed_repurchase(split: Split, half_life_days: float) -> np.ndarray:
    """Past purchases weighted 2^(-age / half-life) at the cut, then popularity for everything else."""
    decayed = item_models.decayed_counts(
        split.train, split.users, split.items, split.cut, half_life_days
    ).toarray()
    pop = popularity(split)
    return np.where(decayed > 0, 1e6 * decayed, 0.0) + pop / (pop.max() + 1)


def ease(split: Split, lam: float) -> np.ndarray:
    """EASE fitted on every train user's 0/1 purchases over all items, scored for the evaluated users."""
    (scores,) = _ease_grid(split, [lam], None)
    return scores


def _ease_grid(split: Split, lams: Sequence[float], max_items: int | None) -> Iterator[np.ndarray]:
    everyone = np.array(sorted(split.train["user_id"].unique()))
    return item_models.ease_grid_scores(
        user_item_matrix(split, everyone), user_item_matrix(split, split.users), lams, max_items
    )


def tifu_knn(split: Split, params: item_models.TifuParams) -> np.ndarray:
    """TIFU-KNN over every train user's baskets (a basket: one user's lines at one invoice time)."""
    return dict(_tifu_grid(split, [params]))[params]


def _tifu_grid(
    split: Split, grid: Sequence[item_models.TifuParams]
) -> Iterator[tuple[item_models.TifuParams, np.ndarray]]:
    """TIFU-KNN's scores for each grid point, sharing what points have in common: the user vectors
    (r_basket, r_group, group_size) and one neighbour search for every neighbour count and alpha."""
    everyone = np.array(sorted(split.train["user_id"].unique()))
    rows = pd.Index(everyone).get_indexer(split.users)
    lines = split.train.assign(basket=split.train["ordered_at"])
    groups: dict[tuple, list[item_models.TifuParams]] = {}
    for params in grid:
        groups.setdefault((params.r_basket, params.r_group, params.group_size), []).append(params)
    for points in groups.values():
        vectors = item_models.tifu_user_vectors(lines, everyone, split.items, points[0])
        means = item_models.tifu_neighbour_means(vectors, rows, sorted({p.neighbours for p in points}))
        own = vectors[rows]
        for params in points:
            yield params, item_models.tifu_blend(own, means[params.neighbours], params.alpha)


def grid_scores(
    name: str, split: Split, grid: Sequence[Any], ease_max_items: int | None = None
) -> Iterator[tuple[Any, np.ndarray]]:
    """Each point of a tuned peer's grid (PEER_GRIDS) with its scores, in any order: EASE shares one item
    gram over its lambdas (fitted on the `ease_max_items` most-bought items, None: all), TIFU-KNN its
    user vectors and neighbours, so a grid costs little more than its most expensive point."""
    if name == "ease":
        yield from zip(grid, _ease_grid(split, grid, ease_max_items), strict=True)
    elif name == "tifu_knn":
        yield from _tifu_grid(split, grid)
    else:
        fit = PEER_GRIDS[name][0]
        for params in grid:
            yield params, fit(split, params)


# Each tuned peer's fit and the grid its knobs are chosen from (scoring/evaluation/tuning.py).
PEER_GRIDS = {
    "ease": (ease, [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0]),
    "decayed_repurchase": (decayed_repurchase, [7.0, 14.0, 30.0, 60.0, 120.0, 240.0, 480.0]),
    "tifu_knn": (
        tifu_knn,
        [
            item_models.TifuParams(neighbours=n, alpha=a, r_basket=rb, r_group=rg)
            for n in (100, 300)
            for a in (0.5, 0.7, 0.9)
            for rb, rg in ((1.0, 0.6), (0.9, 0.7), (0.9, 0.9))
        ],
    ),
}
