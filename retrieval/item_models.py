"""The cheap models the field measures recommenders against, each a pure function of a purchase history,
used twice: as peers in the offline evaluation and as candidate sources and ranker features of Aisle.

- EASE (Steck, WWW 2019): a closed-form item-item model, B = I - P diagMat(1 / diag(P)) with
  P = (X'X + lambda I)^-1, scores = X B. Strong on novel items; dense items x items and cubic to fit, so
  it is fitted on the catalogue's most-bought items (`max_items`), the head that has the co-purchases.
- Time-decayed repurchase: each past purchase of an item counts 2^(-age / half_life). The reorder signal
  that dominates gift and grocery shops.
- TIFU-KNN (Hu et al., SIGIR 2020), for next-basket data: a user is the time-decayed mean of their basket
  vectors (baskets decay by r_basket inside a group of `group_size` baskets, groups by r_group); the
  prediction blends the user's own vector (alpha) with the mean of the `neighbours` most similar users'.

A history is purchase lines: user_id, item_id, ordered_at and, for TIFU-KNN, a basket key (`basket`:
the order, or the purchase time where there is no order id).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retrieval.ordering import top_k_rows

DAY = 86_400.0


def item_gram(binary: sp.csr_matrix) -> np.ndarray:
    """X'X of a users x items 0/1 matrix, dense float64: EASE's one pass over the purchases, shared by
    every lambda of a tuning grid."""
    return (binary.T @ binary).toarray().astype(np.float64)


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item x item weights from the item gram (zero diagonal); `gram` is left as it was."""
    gram = gram.copy()
    gram[np.diag_indices_from(gram)] += lam
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


def ease_scores(binary: sp.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """Users x items EASE scores for the users (rows) of `binary`."""
    return np.asarray(binary @ weights, dtype=np.float32)


def ease_head(binary: sp.csr_matrix, max_items: int | None) -> np.ndarray:
    """The item positions EASE is fitted on: every item when there are at most `max_items` (None: no
    bound), else the `max_items` with the most buyers, ties to the smaller position. Its inversion is
    cubic in its items (a 13,876-item grocery catalogue took minutes per lambda on 2 cores), while the
    long tail it drops has too few buyers for item-item weights to mean much."""
    n_items = binary.shape[1]
    if max_items is None or n_items <= max_items:
        return np.arange(n_items)
    buyers = np.asarray(binary.getnnz(axis=0))
    return np.sort(np.lexsort((np.arange(n_items), -buyers))[:max_items])


def ease_grid_scores(
    everyone: sp.csr_matrix, users: sp.csr_matrix, lams: Sequence[float], max_items: int | None
) -> Iterator[np.ndarray]:
    """Users x items EASE scores of the `users` rows for each lambda, fitted on `everyone`'s purchases
    over the item head (`ease_head`; the other items score 0), with one gram for the whole grid."""
    head = ease_head(everyone, max_items)
    whole = len(head) == everyone.shape[1]
    gram = item_gram(everyone if whole else everyone[:, head])
    mine = users if whole else users[:, head]
    for lam in lams:
        scores = ease_scores(mine, ease_weights(gram, lam))
        if not whole:
            scores = _widen(scores, head, users.shape[1])
        yield scores


def _widen(scores: np.ndarray, columns: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((scores.shape[0], width), dtype=scores.dtype)
    out[:, columns] = scores
    return out


def decayed_counts(
    lines: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    as_of: pd.Timestamp,
    half_life_days: float,
) -> sp.csr_matrix:
    """Users x items sum over past purchases of 2^(-age / half_life) (age in days before `as_of`)."""
    u = pd.Index(user_ids).get_indexer(lines["user_id"])
    i = pd.Index(item_ids).get_indexer(lines["item_id"])
    age = (as_of - lines["ordered_at"]).dt.total_seconds().to_numpy() / DAY
    keep = (u >= 0) & (i >= 0) & (age >= 0)
    weight = np.exp2(-age[keep] / half_life_days).astype(np.float32)
    return sp.csr_matrix((weight, (u[keep], i[keep])), shape=(len(user_ids), len(item_ids)))


@dataclass(frozen=True)
class TifuParams:
    """TIFU-KNN's knobs (the paper's notation: k, alpha, r_b, r_g, m)."""

    neighbours: int = 300
    alpha: float = 0.7
    r_basket: float = 0.9
    r_group: float = 0.7
    group_size: int = 7


def tifu_user_vectors(
    lines: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, params: TifuParams
) -> np.ndarray:
    """Each user's time-decayed mean basket vector (dense users x items; zero for users without baskets).

    Baskets are numbered from the newest (0) back; basket j sits in group j // group_size (0 = newest) at
    position j % group_size, and weighs r_basket^position * r_group^group, normalised per user. This is the
    paper's repeated within-group and across-group averaging written as one weighted sum.
    """
    u = pd.Index(user_ids).get_indexer(lines["user_id"])
    i = pd.Index(item_ids).get_indexer(lines["item_id"])
    keep = (u >= 0) & (i >= 0)
    frame = pd.DataFrame({"u": u[keep], "i": i[keep], "basket": lines["basket"].to_numpy()[keep]})
    frame["t"] = lines["ordered_at"].to_numpy()[keep]
    baskets = frame.groupby(["u", "basket"], as_index=False)["t"].max()
    newest_first = baskets.sort_values(["t", "basket"], ascending=[False, True], kind="stable")
    baskets["back"] = newest_first.groupby("u").cumcount()
    baskets["w"] = params.r_basket ** (baskets["back"] % params.group_size) * params.r_group ** (
        baskets["back"] // params.group_size
    )
    baskets["w"] /= baskets.groupby("u")["w"].transform("sum")
    frame = frame.drop_duplicates(["u", "basket", "i"]).merge(
        baskets[["u", "basket", "w"]], on=["u", "basket"]
    )
    vectors = sp.csr_matrix(
        (frame["w"].to_numpy(np.float32), (frame["u"], frame["i"])), shape=(len(user_ids), len(item_ids))
    )
    return vectors.toarray()


def tifu_neighbour_means(
    vectors: np.ndarray, rows: np.ndarray, neighbours: Sequence[int], batch: int = 1024
) -> dict[int, np.ndarray]:
    """For each count n of `neighbours`, the mean vector of the n users most similar to each user at
    `rows` of `vectors` (all users are candidates; a user is never their own neighbour). One similarity
    pass serves every n: the n best are the first n of the largest count's best, in the shared order."""
    norms = np.linalg.norm(vectors, axis=1)
    unit = (vectors / np.maximum(norms, 1e-12)[:, None]).astype(np.float64)
    counts = {n: min(n, len(vectors) - 1) for n in neighbours}
    widest = max(counts.values(), default=0)
    out = {n: np.zeros((len(rows), vectors.shape[1]), dtype=np.float32) for n in counts}
    if widest <= 0:
        return out
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        # A user's neighbours and their mean must not depend on which users share the batch (an update
        # scores a few, a full run everyone): the similarities in float64, whose BLAS noise is below
        # the precision they are compared at, the neighbours by the shared order (ties to the smaller
        # row), summed in row order.
        similarity = unit[chunk] @ unit.T
        similarity[np.arange(len(chunk)), chunk] = -np.inf
        best = top_k_rows(similarity, widest)[0]
        for n, k in counts.items():
            if k <= 0:
                continue
            nearest = np.sort(best[:, :k], axis=1)
            pick = sp.csr_matrix(
                (
                    np.full(nearest.size, 1.0 / k, dtype=np.float32),
                    nearest.ravel(),
                    np.arange(0, nearest.size + 1, k),
                ),
                shape=(len(chunk), len(vectors)),
            )
            out[n][start : start + len(chunk)] = pick @ vectors
    return out


def tifu_blend(own: np.ndarray, neighbour_mean: np.ndarray, alpha: float) -> np.ndarray:
    """TIFU-KNN's prediction: the user's own vector weighted alpha, the neighbours' mean the rest."""
    return alpha * own + (1 - alpha) * neighbour_mean


def tifu_scores(vectors: np.ndarray, rows: np.ndarray, params: TifuParams, batch: int = 1024) -> np.ndarray:
    """TIFU-KNN scores for the users at `rows` of `vectors`."""
    means = tifu_neighbour_means(vectors, rows, [params.neighbours], batch)
    return tifu_blend(vectors[rows], means[params.neighbours], params.alpha)
