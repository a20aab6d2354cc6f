"""What the search ranker reads, built by one function when it learns (scoring/search/stages.py) and when
it answers (scoring/search/engine.py), so training and serving cannot drift apart.

`ranking_frame` hands `scoring.ranking.search_rank.search_features` the same kinds of frames on both
paths:

- the hybrid retriever's candidates (retrieval/hybrid.py) for normalised queries;
- the catalogue's per-item columns: text, category, price, and popularity (item_stats' units_30d);
- Feast's query statistics (query_stats), query x item statistics (query_item_stats) and item search
  statistics (item_search_stats);

and adds the user features, from a known shopper's recent purchases (Feast's user_history): the share of
those purchases in the candidate's category, colour and material, and whether the candidate is among
them (`user_bought_item`, the `bought_before` reason).

Training reads every statistic as of one point in time through Feast's point-in-time join; serving reads
the same statistics as the online store holds them (the latest values), item-level ones once at load.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer

from retrieval.hybrid import HybridRetriever
from retrieval.lexical import words
from scoring.ranking import search_rank

# Graded labels of a shopper's action on a result: a purchase says more than a cart, a cart than a click.
GAINS = {"click": 1.0, "cart": 2.0, "purchase": 3.0}

# Feast feature views the ranker reads, by role (the views of feature service search_ranking_v1).
QUERY_VIEW = "query_stats"
QUERY_ITEM_VIEW = "query_item_stats"
ITEM_SEARCH_VIEW = "item_search_stats"
ITEM_VIEW = "item_stats"
USER_HISTORY = "user_history:recent_item_ids"
QUERY_STATS_COLUMNS = ["searches", "click_through_rate", "zero_click_rate"]
QUERY_ITEM_COLUMNS = ["clicks", "carts", "purchases", "click_share"]
ITEM_SEARCH_COLUMNS = ["search_clicks", "search_carts", "search_purchases"]
POPULARITY = "units_30d"

RANKER_DIR = "."  # search_ranker.txt and .json sit in the run folder itself
BASELINE_RANKER_DIR = "search_ranker_without_user"  # the same ranker without user features, for the record

CANDIDATE_COLUMNS = ["lexical_score", "dense_score", "lexical_rank", "dense_rank", "fused_score"]


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch on `threads` threads inside the block, then restore the process's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode(model: SentenceTransformer, queries: list[str], batch_size: int = 128) -> np.ndarray:
    """Unit-length query vectors from the run's fine-tuned encoder, without autograd bookkeeping."""
    with torch.inference_mode():
        vectors = model.encode(
            queries,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def candidates(
    retriever: HybridRetriever,
    queries: list[str],
    vectors: np.ndarray,
    pool: int,
    filters=None,
) -> pd.DataFrame:
    """The hybrid retriever's fused candidates for each query: query, corrected_query (the words BM25
    scored, after typo correction), item_id and the retrieval columns."""
    if not queries:
        return pd.DataFrame(columns=["query", "corrected_query", "item_id", *CANDIDATE_COLUMNS])
    if len(queries) == 1:
        frame = retriever.retrieve(queries[0], vectors[0], pool, filters).assign(query=queries[0])
    else:
        frame = retriever.retrieve_many(queries, vectors, pool, filters)
        frame["query"] = np.asarray(queries, dtype=object)[frame.pop("query_index").to_numpy(int)]
    corrected = {q: corrected_query(retriever, q) for q in pd.unique(frame["query"])}
    frame["corrected_query"] = frame["query"].map(corrected)
    frame["item_id"] = frame["item_id"].astype(str)
    return frame[["query", "corrected_query", "item_id", *CANDIDATE_COLUMNS]]


def corrected_query(retriever: HybridRetriever, query: str) -> str:
    """The query's words as the lexical index scores them (typo-corrected where that is on)."""
    return " ".join(retriever.lexical.correct(query).corrected)


EMPTY_QUERY_ITEM_STATS = pd.DataFrame(
    {"query": pd.Series(dtype=str), "item_id": pd.Series(dtype=str)}
    | {c: pd.Series(dtype=float) for c in QUERY_ITEM_COLUMNS}
)

# User features: search_rank's two, and the shopper's colour and material tastes, which is what decides
# which of a broad query's items a shopper picks (a "mug" query matches mugs of every colour).
USER_ATTRIBUTES = {
    "user_category_affinity": "category",
    "user_colour_affinity": "colour",
    "user_material_affinity": "material",
}
USER_FEATURES = [*USER_ATTRIBUTES, "user_bought_item"]
PERSONAL_FEATURES = [*search_rank.FEATURES, *(f for f in USER_FEATURES if f not in search_rank.FEATURES)]
NON_PERSONAL_FEATURES = [f for f in PERSONAL_FEATURES if f not in USER_FEATURES]
CATALOGUE_COLUMNS = ["item_id", "text", "title", "category", "colour", "material", "price", "popularity"]


@dataclass
class Catalogue:
    """The items the ranker reads, one row per item in FAISS order, with their attributes by id."""

    items: pd.DataFrame  # CATALOGUE_COLUMNS

    def __post_init__(self) -> None:
        self.items = self.items.reset_index(drop=True)
        self.items["item_id"] = self.items["item_id"].astype(str)
        self.row_of = pd.Index(self.items["item_id"])
        # What a result shows of each item (title, category, price), as JSON-ready Python values.
        self.shown = [
            (_text(title), _text(category), None if pd.isna(price) else float(price))
            for title, category, price in zip(
                self.items["title"], self.items["category"], self.items["price"], strict=True
            )
        ]
        self.attribute_values = {
            attribute: np.array([_text(v) for v in self.items[attribute]], dtype=object)
            for attribute in set(USER_ATTRIBUTES.values())
        }

    def rows(self, item_ids: pd.Series | np.ndarray | list) -> np.ndarray:
        return self.row_of.get_indexer(np.asarray(item_ids, dtype=object))

    def subset(self, item_ids: pd.Series | np.ndarray) -> pd.DataFrame:
        return self.items.iloc[self.rows(pd.unique(np.asarray(item_ids, dtype=object)))]


def _text(value: object) -> str | None:
    return None if value is None or (np.ndim(value) == 0 and pd.isna(value)) else str(value)


def user_arrays(catalogue: Catalogue, rows: np.ndarray, recent: list[str] | None) -> dict[str, np.ndarray]:
    """USER_FEATURES of the candidates at catalogue `rows` for one shopper's recent purchases.

    For a shopper with a history: the share of their recent purchases (those whose attribute is known) in
    the candidate's category, colour and material (0 when none), and 1 when the candidate is among them.
    NaN for an anonymous shopper or one the store has no history for: the ranker reads it as unknown.
    """
    if not recent:
        return {name: np.full(len(rows), np.nan) for name in USER_FEATURES}
    bought_rows = catalogue.rows(recent)
    bought_rows = bought_rows[bought_rows >= 0]
    out = {}
    for name, attribute in USER_ATTRIBUTES.items():
        values = catalogue.attribute_values[attribute]
        known = [v for v in values[bought_rows] if v is not None]
        shares = {v: c / len(known) for v, c in Counter(known).items()} if known else {}
        out[name] = np.fromiter((shares.get(v, 0.0) for v in values[rows]), dtype=float, count=len(rows))
    out["user_bought_item"] = np.isin(rows, bought_rows).astype(float)
    return out


def with_user_features(
    frame: pd.DataFrame, catalogue: Catalogue, histories: pd.DataFrame | None
) -> pd.DataFrame:
    """The frame with USER_FEATURES for each row's `user_id`, from `histories` (user_id, recent_item_ids:
    Feast's user_history); see user_arrays."""
    columns = {name: np.full(len(frame), np.nan) for name in USER_FEATURES}
    if histories is not None and "user_id" in frame and len(histories):
        recent = {
            str(user): [str(i) for i in ids]
            for user, ids in zip(histories["user_id"], histories["recent_item_ids"], strict=True)
            if ids is not None and len(ids)
        }
        rows = catalogue.rows(frame["item_id"].astype(str))
        users = frame["user_id"].to_numpy(dtype=object)
        for user, positions in pd.Series(np.arange(len(frame))).groupby(users, sort=False).groups.items():
            if str(user) in recent:
                positions = np.asarray(positions)
                for name, values in user_arrays(catalogue, rows[positions], recent[str(user)]).items():
                    columns[name][positions] = values
    return frame.assign(**columns)


def ranking_frame(
    candidates: pd.DataFrame,
    catalogue: Catalogue,
    query_stats: pd.DataFrame | None,
    query_item_stats: pd.DataFrame,
    item_search_stats: pd.DataFrame,
    histories: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The candidates with every ranker feature (PERSONAL_FEATURES), for many searches at once.

    `histories` (user_id, recent_item_ids) for the candidates' `user_id` column; None for anonymous
    searches. An empty statistics frame means the log has none for those keys (zero), as an absent row of
    a point-in-time join does.
    """
    frame = search_rank.search_features(
        candidates,
        items=catalogue.subset(candidates["item_id"]),
        query_stats=query_stats,
        query_item_stats=query_item_stats,
        item_search_stats=item_search_stats,
    )
    return with_user_features(frame, catalogue, histories)


class LiveFeatures:
    """The same features as `ranking_frame`, for one query at a time, from arrays aligned with the
    catalogue: a live search computes them in about a millisecond, where the frame joins take tens.

    Built once per loaded run from the statistics the online store holds (the latest values); the query's
    own statistics and the shopper's recent purchases are passed per request. The word-overlap features
    are search_rank's own `text_match`. A ranker that reads a feature this class does not compute (a
    newer search_rank) is served by `ranking_frame` instead (`covers`), and
    tests/test_search_pipeline.py checks that both paths give the same values.
    """

    COMPUTED = frozenset(
        [
            *CANDIDATE_COLUMNS,
            "lexical_score_share",
            "dense_score_gap",
            "in_both",
            "query_words",
            *search_rank.TEXT_FEATURES,
            "item_popularity",
            "price",
            "price_to_query_median",
            *(f"query_{c}" for c in QUERY_STATS_COLUMNS),
            *(f"query_item_{c}" for c in QUERY_ITEM_COLUMNS),
            *(f"item_{c}" for c in ITEM_SEARCH_COLUMNS),
            *USER_FEATURES,
        ]
    )

    def __init__(
        self, catalogue: Catalogue, item_search_stats: pd.DataFrame, query_item_stats: pd.DataFrame
    ) -> None:
        self.catalogue = catalogue
        items = catalogue.items
        self.popularity = items["popularity"].to_numpy(dtype=float)
        self.price = pd.to_numeric(items["price"], errors="coerce").to_numpy(dtype=float)
        self.texts = items["text"].to_numpy(dtype=object)
        aligned = item_search_stats.assign(item_id=item_search_stats["item_id"].astype(str))
        aligned = aligned.drop_duplicates("item_id", keep="last").set_index("item_id")
        self.item_search = {
            f"item_{c}": aligned[c].reindex(catalogue.row_of).fillna(0.0).to_numpy(dtype=float)
            for c in ITEM_SEARCH_COLUMNS
        }
        self.query_items: dict[str, tuple[pd.Index, np.ndarray]] = {}
        pairs = query_item_stats.drop_duplicates(["query", "item_id"], keep="last")
        for query, group in pairs.groupby("query", sort=False):
            rows = catalogue.rows(group["item_id"].astype(str))
            known = rows >= 0
            values = group[QUERY_ITEM_COLUMNS].to_numpy(dtype=float)[known]
            self.query_items[str(query)] = (pd.Index(rows[known]), values)

    @classmethod
    def covers(cls, features: list[str]) -> bool:
        return set(features) <= cls.COMPUTED

    def arrays(
        self,
        query: str,
        corrected: str,
        found: pd.DataFrame,
        query_stats: dict | None,
        recent: list[str] | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(catalogue rows, feature -> values) of one query's candidates (the hybrid retriever's frame)."""
        rows = self.catalogue.rows(found["item_id"].to_numpy(dtype=object))
        n = len(rows)
        out = {c: found[c].to_numpy(dtype=float) for c in CANDIDATE_COLUMNS}
        lexical, dense = out["lexical_score"], out["dense_score"]
        best = lexical.max() if n else 0.0
        out["lexical_score_share"] = lexical / best if best > 0 else np.zeros(n)
        out["dense_score_gap"] = _nanmax(dense) - dense
        out["in_both"] = (~np.isnan(out["lexical_rank"]) & ~np.isnan(out["dense_rank"])).astype(float)
        out["query_words"] = np.full(n, float(len(words(query))))
        matched = search_rank.text_match(pd.Series([corrected] * n), pd.Series(self.texts[rows]))
        for column in search_rank.TEXT_FEATURES:
            out[column] = matched[column].to_numpy(dtype=float)
        out["item_popularity"] = self.popularity[rows]
        price = self.price[rows]
        out["price"] = price
        median = np.nanmedian(price) if n and not np.isnan(price).all() else np.nan
        out["price_to_query_median"] = price / median if median > 0 else np.full(n, np.nan)
        for column in QUERY_STATS_COLUMNS:
            value = None if query_stats is None else query_stats.get(column)
            out[f"query_{column}"] = np.full(n, np.nan if value is None else float(value))
        query_item = np.zeros((n, len(QUERY_ITEM_COLUMNS)))
        if query in self.query_items:
            known_rows, values = self.query_items[query]
            position = known_rows.get_indexer(rows)
            hit = position >= 0
            query_item[hit] = values[position[hit]]
        for i, column in enumerate(QUERY_ITEM_COLUMNS):
            out[f"query_item_{column}"] = query_item[:, i]
        for name, values in self.item_search.items():
            out[name] = values[rows]
        out.update(user_arrays(self.catalogue, rows, recent))
        return rows, out


def _nanmax(values: np.ndarray) -> float:
    return float(np.nanmax(values)) if len(values) and not np.isnan(values).all() else np.nan


def popular_items(popularity: np.ndarray, share: float) -> np.ndarray:
    """True for the items among the catalogue's top `share` by popularity (units sold in 30 days); an
    item that sold nothing is never popular."""
    popularity = np.nan_to_num(np.asarray(popularity, dtype=float), nan=0.0)
    if not len(popularity) or share <= 0:
        return np.zeros(len(popularity), dtype=bool)
    threshold = np.quantile(popularity, 1.0 - share)
    return (popularity >= threshold) & (popularity > 0)


def reasons(
    lexical_rank: np.ndarray, dense_rank: np.ndarray, popular: np.ndarray, bought: np.ndarray
) -> list[list[str]]:
    """Why each ranked item matched: lexical (BM25 retrieved it), semantic (FAISS retrieved it), popular
    (among the catalogue's most bought), bought_before (among the shopper's recent purchases)."""
    flags = (
        ("lexical", ~np.isnan(lexical_rank)),
        ("semantic", ~np.isnan(dense_rank)),
        ("popular", np.asarray(popular, dtype=bool)),
        ("bought_before", np.asarray(bought) == 1),
    )
    return [[name for name, flag in flags if flag[i]] for i in range(len(lexical_rank))]
