"""Candidate sources a shopper would expect, merged per user before ranking.

- embedding: FAISS top-K items for the user's history embedding (the fine-tuned two-tower model);
- repeat: everything the user bought before, scored by time-decayed repurchase (repeat purchases dominate
  gift and grocery shops);
- co_purchase: item-kNN, items bought by the same users as the user's items (cosine, binary);
- als: implicit-feedback matrix factorisation (implicit's ALS) over purchase counts;
- ease: EASE's top items the user never bought (retrieval/item_models.py);
- tifu: TIFU-KNN's top items (the user's decayed baskets blended with their nearest neighbours');
- popular: the items most bought in the last 30 days;
- content: the listed items nobody has bought yet whose titles are nearest the user's history
  (retrieval/content.py): the only source that reaches a new listing before its first sale.

Besides the sources' own columns (0 where a source did not propose the item), every candidate carries its
EASE, TIFU-KNN and two title scores (MODEL_SCORES: `title_score`, the title's TF-IDF similarity to the
history, and `title_transfer_score`, the user's purchases of the item's title look-alikes), whichever
source proposed it: the ranker reads them as features for repeats, novel and new items alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retrieval import content, item_models
from retrieval import index as faiss_index
from retrieval.ordering import top_k_rows

SOURCES = ("repeat", "co_purchase", "embedding", "als", "ease", "tifu", "popular", "content")
MODEL_SCORES = ("ease_score", "tifu_score", "title_score", "title_transfer_score")


@dataclass(frozen=True)
class Budget:
    """How many candidates each source proposes per user, and the ALS and popularity models' knobs."""

    k: int
    popular_k: int
    als_dim: int = 128
    seed: int = 0
    als_regularization: float = 0.05
    als_iterations: int = 15
    popular_days: int = 30
    half_life_days: float = 90.0
    ease_lambda: float = 200.0
    ease_max_items: int = 5_000
    tifu: item_models.TifuParams = item_models.TifuParams()
    embedding: bool = True  # the encoder's FAISS neighbours as a source (settings.embedding_candidates)
    content_k: int = 50  # unsold items the content source proposes per user
    title_neighbours: int = 20  # title look-alikes per item of the transfer score


@dataclass(frozen=True)
class Queries:
    """The users to retrieve for, with their history embeddings (row i belongs to user_ids[i])."""

    user_ids: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class Catalogue:
    """The FAISS index over item embeddings, with the item id and text (title and category) of each row."""

    index: object
    item_ids: np.ndarray
    texts: np.ndarray


def user_item_matrix(
    lines: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, binary: bool = True
) -> sp.csr_matrix:
    """Users x items purchase matrix over the given id orders: 1/0, or purchase-line counts."""
    u = pd.Index(user_ids).get_indexer(lines["user_id"])
    i = pd.Index(item_ids).get_indexer(lines["item_id"])
    keep = (u >= 0) & (i >= 0)
    data = np.ones(int(keep.sum()), dtype=np.float32)
    matrix = sp.csr_matrix((data, (u[keep], i[keep])), shape=(len(user_ids), len(item_ids)))
    if binary:
        matrix.data[:] = 1.0
    return matrix


def als_factors(
    counts: sp.csr_matrix, factors: int, seed: int, regularization: float = 0.05, iterations: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of implicit's ALS fitted on users x items purchase counts.

    BLAS runs single-threaded inside: implicit parallelises ALS itself, and a BLAS thread pool under it
    slows it down (implicit warns about exactly that when it finds one).
    """
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=regularization, iterations=iterations, random_state=seed
        )
        model.fit(counts.tocsr(), show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def als(user_factors: np.ndarray, item_factors: np.ndarray, user_ids, item_ids, k: int, batch: int = 2048):
    """The k items with the highest ALS score per user.

    The product is taken in float64: a float32 BLAS product moves a user's scores by ulps with the
    number of users multiplied at once (an update scores a few users, a full run everyone), which can
    cross one of the ranker's splits; float64's noise is far below the float32 scores it is cast to.
    """
    items = item_factors.astype(np.float64).T
    frames = []
    for start in range(0, len(user_ids), batch):
        positions, values = top_k_rows(user_factors[start : start + batch].astype(np.float64) @ items, k)
        frames.append(
            _long(user_ids[start : start + batch], item_ids, positions, np.maximum(values, 1e-6), "als")
        )
    return pd.concat(frames, ignore_index=True)


def _long(user_ids: np.ndarray, item_ids: np.ndarray, positions: np.ndarray, values: np.ndarray, source: str):
    rows = np.repeat(np.arange(len(user_ids)), positions.shape[1])
    flat_pos, flat_val = positions.ravel(), values.ravel()
    keep = (flat_pos >= 0) & (flat_val > 0)
    return pd.DataFrame(
        {
            "user_id": user_ids[rows[keep]],
            "item_id": item_ids[flat_pos[keep]],
            "source": source,
            "source_score": flat_val[keep].astype(np.float32),
        }
    )


def item_similarity(binary: sp.csr_matrix) -> sp.csr_matrix:
    """Item x item cosine similarity of binary purchase vectors, self-similarity removed (item-kNN)."""
    norms = np.sqrt(np.maximum(np.asarray(binary.sum(axis=0)).ravel(), 1.0))
    co = (binary.T @ binary).tocsr().astype(np.float32)
    co.setdiag(0)
    return (sp.diags(1 / norms) @ co @ sp.diags(1 / norms)).tocsr()


def co_purchase(
    matrix: sp.csr_matrix,
    user_ids,
    item_ids,
    k: int,
    batch: int = 2048,
    similarity: sp.csr_matrix | None = None,
) -> pd.DataFrame:
    """Item-kNN scores (sum of cosine similarities to the user's items), the user's own items excluded.
    `similarity` is the item x item similarity to use (by default fitted on `matrix` itself)."""
    similarity = item_similarity(matrix) if similarity is None else similarity
    frames = []
    for start in range(0, matrix.shape[0], batch):
        block = matrix[start : start + batch]
        scores = np.asarray((block @ similarity).todense())
        scores[block.nonzero()] = 0.0
        positions, values = top_k_rows(scores, k)
        frames.append(_long(user_ids[start : start + batch], item_ids, positions, values, "co_purchase"))
    return pd.concat(frames, ignore_index=True)


def repeat(lines: pd.DataFrame, as_of: pd.Timestamp, half_life_days: float) -> pd.DataFrame:
    """Every item the user bought, scored by time-decayed repurchase: each past purchase counts
    2^(-age / half-life)."""
    age_days = (as_of - lines["ordered_at"]).dt.total_seconds() / 86400
    weighted = lines[["user_id", "item_id"]].assign(source_score=np.exp2(-age_days / half_life_days))
    grouped = weighted.groupby(["user_id", "item_id"], as_index=False)["source_score"].sum()
    grouped["source_score"] = grouped["source_score"].astype(np.float32)
    return grouped.assign(source="repeat")[["user_id", "item_id", "source", "source_score"]]


def from_matrix(
    scores: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, k: int, source: str, exclude=None
) -> pd.DataFrame:
    """The k best items per row of a dense users x items score matrix (positive scores only), skipping
    the non-zero cells of `exclude` (the user's own items)."""
    scores = scores.copy()
    if exclude is not None:
        scores[exclude.nonzero()] = -np.inf
    positions, values = top_k_rows(scores, k)
    return _long(user_ids, item_ids, positions, np.where(np.isfinite(values), values, 0.0), source)


def lookup(scores: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """Each (user, item) row's cell of a dense users x items score matrix."""
    rows = pd.Index(user_ids).get_indexer(frame["user_id"])
    cols = pd.Index(item_ids).get_indexer(frame["item_id"])
    return scores[rows, cols].astype(np.float32)


def popular(
    lines: pd.DataFrame, user_ids: np.ndarray, as_of: pd.Timestamp, k: int, days: int = 30
) -> pd.DataFrame:
    """The k items most bought (distinct buyers) in the `days` before as_of, for every user."""
    recent = lines[lines["ordered_at"] >= as_of - timedelta(days=days)]
    if recent.empty:
        recent = lines
    top = recent.groupby("item_id")["user_id"].nunique().nlargest(k)
    score = (top / top.max()).astype(np.float32)
    return pd.DataFrame(
        {
            "user_id": np.repeat(user_ids, len(top)),
            "item_id": np.tile(top.index.to_numpy(), len(user_ids)),
            "source": "popular",
            "source_score": np.tile(score.to_numpy(), len(user_ids)),
        }
    )


def embedding(
    index, user_vectors: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, k: int
) -> pd.DataFrame:
    scores, positions = faiss_index.search(index, user_vectors, k)
    return _long(user_ids, item_ids, positions, np.maximum(scores, 1e-6), "embedding")


def merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per (user, item): each source's score as a column, and the first source in SOURCES order
    that proposed it as the reason."""
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(
        index=["user_id", "item_id"], columns="source", values="source_score", aggfunc="max", fill_value=0.0
    )
    wide = wide.reindex(columns=list(SOURCES), fill_value=0.0).reset_index()
    wide.columns.name = None
    wide["source"] = _reasons(wide)
    return wide


def _reasons(frame: pd.DataFrame) -> np.ndarray:
    """Each row's first source in SOURCES order with a score: the reason it is a candidate."""
    return np.array(SOURCES)[(frame[list(SOURCES)].to_numpy() > 0).argmax(axis=1)]


def without_source(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Merged candidates as if `source` had proposed nothing: the rows only it proposed left out, its
    column zero, and each row's reason the first of the other sources (what `generate` returns without
    it)."""
    others = [s for s in SOURCES if s != source]
    kept = frame[(frame[others].to_numpy() > 0).any(axis=1)].assign(**{source: 0.0})
    return kept.assign(source=_reasons(kept))


def generate(
    lines: pd.DataFrame, queries: Queries, catalogue: Catalogue, as_of: pd.Timestamp, budget: Budget
) -> pd.DataFrame:
    """Every source for the queried users from purchases strictly before `as_of`, merged.

    The global models (ALS, co-purchase similarity, EASE, TIFU-KNN's neighbours, popularity) are fitted
    on everyone's purchases whichever users are asked, so a user gets the same candidates whether they
    are scored with everyone (`make score`) or alone with the few users a day changed (`make update`).
    """
    user_ids, item_ids = queries.user_ids, catalogue.item_ids
    before = lines[lines["ordered_at"] < as_of]
    everyone = np.array(sorted(before["user_id"].unique()))
    counts = user_item_matrix(before, everyone, item_ids, binary=False)
    everyone_binary = counts.copy()
    everyone_binary.data[:] = 1.0
    everyone_factors, item_factors = als_factors(
        counts, budget.als_dim, budget.seed, budget.als_regularization, budget.als_iterations
    )
    binary = user_item_matrix(before, user_ids, item_ids)
    rows = pd.Index(everyone).get_indexer(user_ids)
    tifu_vectors = item_models.tifu_user_vectors(
        before.assign(basket=before["ordered_at"]), everyone, item_ids, budget.tifu
    )
    tifu = np.zeros((len(user_ids), len(item_ids)), dtype=np.float32)
    known = rows >= 0
    tifu[known] = item_models.tifu_scores(tifu_vectors, rows[known], budget.tifu)
    (ease,) = item_models.ease_grid_scores(
        everyone_binary, binary, [budget.ease_lambda], budget.ease_max_items
    )
    titles = content.title_vectors(catalogue.texts)
    mine = user_item_matrix(before, user_ids, item_ids, binary=False)
    sold = np.asarray(everyone_binary.sum(axis=0)).ravel() > 0
    title = content.history(mine, titles)
    title_transfer = content.transfer(mine, titles, sold, budget.title_neighbours)
    frames = [
        repeat(before[before["user_id"].isin(set(user_ids))], as_of, budget.half_life_days),
        co_purchase(binary, user_ids, item_ids, budget.k, similarity=item_similarity(everyone_binary)),
        als(everyone_factors[rows[known]], item_factors, user_ids[known], item_ids, budget.k),
        from_matrix(ease, user_ids, item_ids, budget.k, "ease", exclude=binary),
        from_matrix(tifu, user_ids, item_ids, budget.k, "tifu"),
        popular(before, user_ids, as_of, budget.popular_k, budget.popular_days),
        from_matrix(np.where(sold, 0.0, title), user_ids, item_ids, budget.content_k, "content"),
    ]
    if budget.embedding:
        frames.insert(0, embedding(catalogue.index, queries.vectors, user_ids, item_ids, budget.k))
    merged = merge(frames)
    merged["ease_score"] = lookup(ease, user_ids, item_ids, merged)
    merged["tifu_score"] = lookup(tifu, user_ids, item_ids, merged)
    merged["title_score"] = lookup(title, user_ids, item_ids, merged)
    merged["title_transfer_score"] = lookup(title_transfer, user_ids, item_ids, merged)
    return merged
