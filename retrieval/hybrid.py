"""Hybrid retrieval: BM25 (retrieval/lexical.py) and FAISS over the encoder's item embeddings, fused by
reciprocal rank, filterable by category and price.

Why reciprocal-rank fusion: BM25 scores and cosine similarities live on unrelated scales that drift with the
query's length and the catalogue, while ranks do not; RRF (Cormack et al., 2009) needs no calibration and
one constant. Each retriever contributes `pool` candidates; an item's fused score is
w_lex / (k + lexical_rank) + w_dense / (k + dense_rank), a missing rank counting nothing.

Why filters inside each retriever rather than after fusion: filtering a fixed top-k afterwards returns
few or no items for a narrow category or price band. Here BM25 scores every item anyway, so the allowed
ones are taken exactly, and FAISS searches with an ID selector over the allowed rows; both still return
`pool` items while at least that many pass the filters.

Every candidate gets both raw scores, whichever list it came from (BM25 is computed for all items, and the
dense score is the inner product with the item's stored vector), so a ranker sees complete features; the
ranks stay empty (NaN) for an item outside a retriever's pool, which is itself informative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd

from retrieval import index as faiss_search
from retrieval.lexical import LexicalIndex

COLUMNS = ["item_id", "lexical_score", "dense_score", "lexical_rank", "dense_rank", "fused_score"]


@dataclass(frozen=True)
class Filters:
    """Which items a query may return: any of `categories` (None: all), price within [min, max]."""

    categories: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None

    @classmethod
    def parse(cls, value: Filters | dict | None) -> Filters | None:
        """From a request's dict: {"category": str | [str], "min_price": x, "max_price": y}."""
        if value is None or isinstance(value, Filters):
            return value
        unknown = set(value) - {"category", "categories", "min_price", "max_price"}
        if unknown:
            raise ValueError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        categories = value.get("categories", value.get("category"))
        if isinstance(categories, str):
            categories = [categories]
        filters = cls(
            categories=tuple(str(c) for c in categories) if categories is not None else None,
            min_price=None if value.get("min_price") is None else float(value["min_price"]),
            max_price=None if value.get("max_price") is None else float(value["max_price"]),
        )
        if (
            filters.min_price is not None
            and filters.max_price is not None
            and filters.min_price > filters.max_price
        ):
            raise ValueError("min_price is above max_price")
        return filters

    def is_empty(self) -> bool:
        return self.categories is None and self.min_price is None and self.max_price is None


def rrf(ranks: np.ndarray, k: int, weight: float = 1.0) -> np.ndarray:
    """Reciprocal-rank contribution of 1-based ranks (NaN: not ranked, contributes 0)."""
    ranks = np.asarray(ranks, dtype=float)
    return np.where(np.isnan(ranks), 0.0, weight / (k + np.nan_to_num(ranks, nan=0.0)))


class HybridRetriever:
    """Lexical + dense retrieval over one catalogue, fused by reciprocal rank.

    `item_ids[i]` is FAISS row i; `items` holds item_id and, for filtering, category and price (either may be
    missing, then that filter is refused). `item_vectors` (rows as in FAISS) give every candidate its dense
    score; by default they are read back from a flat index."""

    def __init__(
        self,
        lexical: LexicalIndex,
        faiss_index: faiss.Index | None,
        item_ids: Sequence,
        items: pd.DataFrame | None = None,
        rrf_k: int = 60,
        lexical_weight: float = 1.0,
        dense_weight: float = 1.0,
        item_vectors: np.ndarray | None = None,
    ) -> None:
        self.lexical = lexical
        self.index = faiss_index
        self.item_ids = np.asarray(item_ids)
        self.rrf_k = rrf_k
        self.lexical_weight = lexical_weight
        self.dense_weight = dense_weight
        position = pd.Index(self.item_ids.astype(str))
        if not position.is_unique:
            raise ValueError("item_ids repeat")
        # Lexical index order -> our row order (-1: an item the lexical index has and we do not).
        self._from_lexical = position.get_indexer(lexical.item_ids.astype(str))
        self._to_lexical = pd.Index(lexical.item_ids.astype(str)).get_indexer(position)
        if faiss_index is not None and faiss_index.ntotal != len(self.item_ids):
            raise ValueError(f"FAISS holds {faiss_index.ntotal} vectors for {len(self.item_ids)} item ids")
        if item_vectors is None and faiss_index is not None and isinstance(faiss_index, faiss.IndexFlat):
            item_vectors = faiss_index.reconstruct_n(0, faiss_index.ntotal)
        self.item_vectors = item_vectors
        items = items if items is not None else pd.DataFrame({"item_id": self.item_ids})
        aligned = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")
        aligned = aligned[~aligned.index.duplicated()].reindex(position)
        self.category = aligned["category"].astype("string").to_numpy() if "category" in aligned else None
        self.price = aligned["price"].astype(float).to_numpy() if "price" in aligned else None

    @classmethod
    def from_settings(cls, settings, lexical, faiss_index, item_ids, items=None, item_vectors=None):
        """The retriever with the fusion knobs of `settings` (search_rrf_k and the two weights)."""
        return cls(
            lexical,
            faiss_index,
            item_ids,
            items,
            rrf_k=settings.search_rrf_k,
            lexical_weight=settings.search_lexical_weight,
            dense_weight=settings.search_dense_weight,
            item_vectors=item_vectors,
        )

    # ----- filters ------------------------------------------------------------------------------------
    def allowed(self, filters: Filters | dict | None) -> np.ndarray | None:
        """Boolean mask of the items the filters let through (None: no filter)."""
        filters = Filters.parse(filters)
        if filters is None or filters.is_empty():
            return None
        mask = np.ones(len(self.item_ids), dtype=bool)
        if filters.categories is not None:
            if self.category is None:
                raise ValueError("this catalogue has no category to filter on")
            mask &= np.isin(self.category, list(filters.categories))
        if filters.min_price is not None or filters.max_price is not None:
            if self.price is None:
                raise ValueError("this catalogue has no price to filter on")
            price = self.price
            with np.errstate(invalid="ignore"):
                if filters.min_price is not None:
                    mask &= price >= filters.min_price
                if filters.max_price is not None:
                    mask &= price <= filters.max_price
        return mask

    # ----- the two retrievers ---------------------------------------------------------------------------
    def lexical_scores(self, query: str) -> np.ndarray:
        """BM25 of every item, in our row order (0 for an item the lexical index lacks)."""
        raw = self.lexical.scores(query)
        out = np.zeros(len(self.item_ids), dtype=np.float32)
        ok = self._from_lexical >= 0
        out[self._from_lexical[ok]] = raw[ok]
        return out

    def _dense_top(self, query_vectors: np.ndarray, pool: int, mask: np.ndarray | None):
        """FAISS top-`pool` rows per query, restricted to `mask` by an ID selector."""
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if mask is None:
            scores, rows = faiss_search.search(self.index, queries, pool)
            return scores, rows
        allowed = np.flatnonzero(mask).astype(np.int64)
        if len(allowed) == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        selector = faiss.IDSelectorBatch(allowed)
        if isinstance(self.index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
        scores, rows = self.index.search(queries, min(pool, len(allowed)), params=params)
        return scores, rows

    # ----- fusion -----------------------------------------------------------------------------------------
    def _fuse(
        self,
        lexical: np.ndarray,
        dense_scores: np.ndarray | None,
        dense_rows: np.ndarray | None,
        query_vector: np.ndarray | None,
        pool: int,
        mask: np.ndarray | None,
    ) -> pd.DataFrame:
        eligible = lexical > 0
        if mask is not None:
            eligible &= mask
        candidates = np.flatnonzero(eligible)
        if len(candidates) > pool:
            candidates = candidates[np.argpartition(-lexical[candidates], pool - 1)[:pool]]
        lex_order = candidates[np.lexsort((candidates, -lexical[candidates]))]
        lex_rank = np.full(len(self.item_ids), np.nan)
        lex_rank[lex_order] = np.arange(1, len(lex_order) + 1)
        dense_rank = np.full(len(self.item_ids), np.nan)
        dense_score = np.full(len(self.item_ids), np.nan, dtype=np.float32)
        rows = np.empty(0, dtype=np.int64)
        if dense_rows is not None:
            valid = dense_rows >= 0
            rows = dense_rows[valid]
            dense_rank[rows] = np.arange(1, len(rows) + 1)
            dense_score[rows] = dense_scores[valid]
        union = np.union1d(lex_order, rows)
        if query_vector is not None and self.item_vectors is not None:
            missing = union[np.isnan(dense_score[union])]
            if len(missing):
                vector = np.asarray(query_vector, np.float32).ravel()
                dense_score[missing] = self.item_vectors[missing] @ vector
        fused = rrf(lex_rank[union], self.rrf_k, self.lexical_weight) + rrf(
            dense_rank[union], self.rrf_k, self.dense_weight
        )
        frame = pd.DataFrame(
            {
                "item_id": self.item_ids[union],
                "lexical_score": lexical[union].astype(float),
                "dense_score": dense_score[union].astype(float),
                "lexical_rank": lex_rank[union],
                "dense_rank": dense_rank[union],
                "fused_score": fused,
            }
        )
        ordered = frame.sort_values(["fused_score", "item_id"], ascending=[False, True], kind="stable")
        return ordered.reset_index(drop=True)

    def retrieve(
        self,
        query: str,
        query_vector: np.ndarray | None,
        pool: int,
        filters: Filters | dict | None = None,
    ) -> pd.DataFrame:
        """Fused candidates for one query, best first: up to `pool` from each retriever (fewer when the
        filters leave fewer items, or when BM25 matches fewer). Columns: COLUMNS. Without a query vector
        (or a FAISS index) the dense side is skipped."""
        mask = self.allowed(filters)
        lexical = self.lexical_scores(query)
        dense_scores = dense_rows = None
        if query_vector is not None and self.index is not None:
            dense_scores, dense_rows = self._dense_top(query_vector, pool, mask)
            dense_scores, dense_rows = dense_scores[0], dense_rows[0]
        return self._fuse(lexical, dense_scores, dense_rows, query_vector, pool, mask)

    def retrieve_many(
        self,
        queries: Sequence[str],
        query_vectors: np.ndarray | None,
        pool: int,
        filters: Filters | dict | None = None,
    ) -> pd.DataFrame:
        """`retrieve` for many queries at once (one batched FAISS search), with a `query_index` column
        (position in `queries`) before COLUMNS."""
        mask = self.allowed(filters)
        dense_scores = dense_rows = None
        if query_vectors is not None and self.index is not None:
            dense_scores, dense_rows = self._dense_top(query_vectors, pool, mask)
        frames = []
        for i, query in enumerate(queries):
            frame = self._fuse(
                self.lexical_scores(query),
                None if dense_scores is None else dense_scores[i],
                None if dense_rows is None else dense_rows[i],
                None if query_vectors is None else query_vectors[i],
                pool,
                mask,
            )
            frames.append(frame.assign(query_index=i))
        if not frames:
            return pd.DataFrame(columns=["query_index", *COLUMNS])
        out = pd.concat(frames, ignore_index=True)
        return out[["query_index", *COLUMNS]]
