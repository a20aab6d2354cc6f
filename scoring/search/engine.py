"""The search engine: a shopper's query in, ranked items with scores and reasons out.

It answers from the scoring run that is current (`data/runs/current`) and the live Feast store, in one of
two ways:

- **Head queries** (the most frequent normalised queries, see scoring/search/stages.py) come from the
  published `search_results`, held in memory: an anonymous shopper, or one the store knows nothing about,
  gets the published list as it is; a known shopper gets the same candidates re-ranked with their user
  features (the run keeps each head query's candidates with their features, `search_head_pool.parquet`,
  so this costs one online read and one LightGBM pass over about a hundred rows). A filtered request, or
  one for more items than were published, is answered live.
- **Tail queries** are answered live: normalise -> encode with the run's fine-tuned model -> the hybrid
  retriever (BM25 + FAISS, fused) -> features -> the run's search ranker -> top k. The encoding, most of
  a live search's time, is kept per normalised query (the last `search_query_cache_size`, per worker and
  run), so a tail query searched again skips it.

Where each feature comes from at request time: item-level ones (item search statistics, popularity,
price, category) and query x item statistics are read from the marts once at load, as the online store
holds them (the latest values); the query's statistics and the shopper's recent purchases come from one
Feast online read for the one query and user. A search therefore never looks up a hundred items one by
one. The same feature code serves training (scoring/search/features.py).

Reasons per item: `lexical` (BM25 retrieved it), `semantic` (FAISS retrieved it), `popular` (among the
catalogue's most bought items, `search_popular_share`), `bought_before` (among the shopper's recent
purchases).

`reload_if_changed` is cheap (three file-system checks): when a new run was promoted, its publication
replaced, or a new warehouse build went live, it loads the new artefacts aside and swaps them in with one
assignment, so a search running meanwhile finishes on the old ones.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrieval import index as faiss_index
from retrieval.hybrid import Filters, HybridRetriever
from retrieval.lexical import LexicalIndex
from scoring.errors import AisleError
from scoring.features import feature_store
from scoring.ranking.search_rank import SearchRanker
from scoring.search import features as sf
from scoring.search.query import QueryError, checked
from scoring.settings import Settings
from scoring.warehouse import tables

__all__ = ["QueryError", "SearchAnswer", "SearchEngine", "SearchFilters", "SearchItem", "SearchUnavailable"]

SEARCH_ITEMS = "search_items.parquet"
LEXICAL_DIR = "search_lexical"
HEAD_POOL = "search_head_pool.parquet"
RESULTS = "search_results.parquet"
PUBLISHED_RESULTS = "search_results.parquet"
SHOPPER = "shopper"  # the one shopper of a live search, as ranking_frame's user_id


class SearchUnavailable(AisleError):
    """The current run has no search (its source has no search log): nothing to answer from."""


@dataclass
class SearchFilters:
    """Which items a search may return: any of `categories`, and a price within [min_price, max_price]."""

    categories: list[str] | None = None
    min_price: float | None = None
    max_price: float | None = None

    def hybrid(self) -> Filters | None:
        filters = Filters(
            categories=tuple(self.categories) if self.categories is not None else None,
            min_price=self.min_price,
            max_price=self.max_price,
        )
        return None if filters.is_empty() else filters


@dataclass
class SearchItem:
    item_id: str
    score: float
    title: str | None
    category: str | None
    price: float | None
    reasons: list[str]


@dataclass
class SearchAnswer:
    """One search's answer; `to_json()` is the body of POST /search."""

    query: str
    normalised_query: str
    source: str  # "precomputed" (a published head list) | "live"
    personalised: bool
    run_id: str
    items: list[SearchItem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Ranked:
    """One query's candidates, best first: ids, catalogue rows, scores, reasons and every feature."""

    item_ids: np.ndarray
    rows: np.ndarray
    scores: np.ndarray
    reasons: list[list[str]]
    features: dict[str, np.ndarray]

    def frame(self, query: str) -> pd.DataFrame:
        return pd.DataFrame(
            {"query": query, "item_id": self.item_ids, "score": self.scores, "reasons": self.reasons}
            | self.features
        )


@dataclass
class _Head:
    """A head query's published list, and its candidates with features for re-ranking a known shopper."""

    item_ids: list[str]
    scores: list[float]
    reasons: list[list[str]]
    pool: _Ranked | None


@dataclass
class _Run:
    """Everything one run's engine reads, loaded together and swapped as one."""

    run_id: str
    run_dir: Path
    signature: tuple
    model: Any
    retriever: HybridRetriever
    ranker: SearchRanker
    catalogue: sf.Catalogue
    columns: list[str]  # what a ranked list keeps: the retrieval columns and the ranker's features
    item_search_stats: pd.DataFrame
    query_items: dict[str, pd.DataFrame]
    live: sf.LiveFeatures | None  # the fast one-query path, when it computes every feature of the ranker
    popular: np.ndarray
    head: dict[str, _Head]
    published_from: str
    query_vector: Callable[[str], np.ndarray]  # the encoder's vector of a normalised query, cached (LRU)


class SearchEngine:
    """Answers searches from the current run and the live Feast store (module docstring)."""

    def __init__(self, settings: Settings, run: _Run) -> None:
        self.settings = settings
        self._run: _Run | None = run
        self._signature = run.signature
        self._unavailable = ""
        self._store = feature_store.store(settings)

    # ----- loading --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings) -> SearchEngine:
        """The engine of the current (promoted) run, with its published head results."""
        current = settings.runs_dir / "current"
        if not current.exists():
            raise AisleError(f"no scoring run has been published in {settings.data_dir}: run `make score`")
        return cls(settings, _load_run(settings, current.resolve(), published=True))

    @classmethod
    def from_run(cls, settings: Settings, run_dir: Path) -> SearchEngine:
        """The engine of a run folder before it is promoted and before its head queries are answered (the
        head stage ranks them with it): every query is answered live."""
        return cls(settings, _load_run(settings, Path(run_dir).resolve(), published=None))

    @property
    def run_id(self) -> str:
        return self._loaded().run_id

    @property
    def head_queries(self) -> list[str]:
        return list(self._loaded().head)

    def reload_if_changed(self) -> bool:
        """Load and swap in a newly promoted run, publication or warehouse build; True when it did.

        A newly promoted run without search (a source without a search log) unloads the old one, so no
        answer comes from a catalogue that is no longer current: searches then raise SearchUnavailable
        until a run with search is promoted.
        """
        current = (self.settings.runs_dir / "current").resolve()
        signature = _signature(self.settings, current)
        if signature == self._signature:
            return False
        try:
            run = _load_run(self.settings, current, published=True)
        except SearchUnavailable as error:
            self._run, self._signature, self._unavailable = None, signature, str(error)
            return True
        self._store = feature_store.store(self.settings)
        self._run, self._signature, self._unavailable = run, signature, ""
        return True

    def _loaded(self) -> _Run:
        if self._run is None:
            raise SearchUnavailable(self._unavailable)
        return self._run

    # ----- answering ------------------------------------------------------------------------------------
    def search(
        self, query: str, user_id: str | None = None, k: int = 10, filters: SearchFilters | None = None
    ) -> SearchAnswer:
        """The top k items for a query as typed; raises QueryError for an empty or oversized query."""
        run = self._loaded()
        normalised = checked(query, self.settings.max_query_chars)
        k = max(1, min(int(k), self.settings.search_max_k))
        hybrid = filters.hybrid() if filters is not None else None
        user_id = (user_id or "").strip() or None
        head = run.head.get(normalised)
        if head is not None and hybrid is None and k <= len(head.item_ids):
            recent = self._online(normalised, user_id, with_query=False)[1] if user_id else None
            if recent is None or head.pool is None:
                items = [
                    self._item(run, item, score, why)
                    for item, score, why in zip(
                        head.item_ids[:k], head.scores[:k], head.reasons[:k], strict=True
                    )
                ]
                return SearchAnswer(query, normalised, "precomputed", False, run.run_id, items)
            ranked = self._rerank(run, head.pool, recent)
            return self._answer(run, query, normalised, ranked, k, "precomputed", True)
        query_stats, recent = self._online(normalised, user_id, with_query=True)
        ranked = self._rank(run, normalised, query_stats, recent, hybrid)
        return self._answer(run, query, normalised, ranked, k, "live", recent is not None)

    def explain(self, query: str, user_id: str | None = None, via_frame: bool = False) -> pd.DataFrame:
        """The live path's candidates for a query, best first, with every feature, score and reason;
        `via_frame` computes the features with `ranking_frame`, as training does, instead."""
        run = self._loaded()
        normalised = checked(query, self.settings.max_query_chars)
        query_stats, recent = self._online(normalised, (user_id or "").strip() or None, with_query=True)
        if not via_frame:
            return self._rank(run, normalised, query_stats, recent, None).frame(normalised)
        found = run.retriever.retrieve(normalised, run.query_vector(normalised), self.settings.search_pool)
        corrected = sf.corrected_query(run.retriever, normalised)
        ranked = self._scored_frame(run, normalised, corrected, found, query_stats, recent)
        return ranked.frame(normalised)

    def rank_queries(self, queries: list[str]) -> pd.DataFrame:
        """Every query's ranked candidates for an anonymous shopper, with all features, scores and
        reasons: what the head stage publishes, computed by the live path itself, one query at a time."""
        # One short text at a time is fastest on one thread (as each server worker runs), and encoding
        # each query alone gives exactly the vectors a live search computes.
        with sf.torch_threads(self.settings.serve_torch_threads):
            frames = [self.explain(query) for query in queries]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # ----- internals -----------------------------------------------------------------------------------
    def _online(
        self, query: str, user_id: str | None, with_query: bool
    ) -> tuple[dict[str, Any] | None, list[str] | None]:
        """One online read: the query's statistics and the shopper's recent purchases (None when the store
        has none: a query never searched, an anonymous shopper or one without purchases)."""
        refs, row = [], {}
        if with_query:
            refs += [f"{sf.QUERY_VIEW}:{c}" for c in sf.QUERY_STATS_COLUMNS]
            row["query"] = query
        if user_id is not None:
            refs.append(sf.USER_HISTORY)
            row["user_id"] = user_id
        if not refs:
            return None, None
        values = self._store.get_online_features(features=refs, entity_rows=[row]).to_dict()
        query_stats = None
        if with_query and values[sf.QUERY_STATS_COLUMNS[0]][0] is not None:
            query_stats = {c: values[c][0] for c in sf.QUERY_STATS_COLUMNS}
        recent = None
        if user_id is not None and values["recent_item_ids"][0]:
            recent = [str(i) for i in values["recent_item_ids"][0]]
        return query_stats, recent

    def _rank(
        self,
        run: _Run,
        query: str,
        query_stats: dict[str, Any] | None,
        recent: list[str] | None,
        filters: Filters | None,
    ) -> _Ranked:
        found = run.retriever.retrieve(query, run.query_vector(query), self.settings.search_pool, filters)
        corrected = sf.corrected_query(run.retriever, query)
        if run.live is not None:
            rows, features = run.live.arrays(query, corrected, found, query_stats, recent)
            return self._scored(run, found["item_id"].to_numpy().astype(str), rows, features)
        return self._scored_frame(run, query, corrected, found, query_stats, recent)

    def _scored_frame(
        self,
        run: _Run,
        query: str,
        corrected: str,
        found: pd.DataFrame,
        query_stats: dict[str, Any] | None,
        recent: list[str] | None,
    ) -> _Ranked:
        """The candidates featured by `ranking_frame`, the path training takes (and the one a ranker
        with features LiveFeatures does not compute is served by)."""
        found = found.assign(query=query, corrected_query=corrected)
        histories = None
        if recent is not None:
            found["user_id"] = SHOPPER
            histories = pd.DataFrame({"user_id": [SHOPPER], "recent_item_ids": [recent]})
        frame = sf.ranking_frame(
            found,
            run.catalogue,
            None if query_stats is None else pd.DataFrame([{"query": query, **query_stats}]),
            run.query_items.get(query, sf.EMPTY_QUERY_ITEM_STATS),
            run.item_search_stats,
            histories,
        )
        item_ids = frame["item_id"].to_numpy().astype(str)
        features = {name: frame[name].to_numpy(dtype=float) for name in run.columns}
        return self._scored(run, item_ids, run.catalogue.rows(item_ids), features)

    def _rerank(self, run: _Run, pool: _Ranked, recent: list[str]) -> _Ranked:
        features = pool.features | sf.user_arrays(run.catalogue, pool.rows, recent)
        return self._scored(run, pool.item_ids, pool.rows, features)

    def _scored(
        self, run: _Run, item_ids: np.ndarray, rows: np.ndarray, features: dict[str, np.ndarray]
    ) -> _Ranked:
        if len(rows):
            matrix = np.column_stack([features[name] for name in run.ranker.features])
            scores = run.ranker.model.predict(matrix, num_threads=1)
        else:
            scores = np.empty(0)
        order = np.lexsort((item_ids, -scores))
        ranked = {name: values[order] for name, values in features.items()}
        bought = ranked.get("user_bought_item", np.full(len(order), np.nan))
        why = sf.reasons(ranked["lexical_rank"], ranked["dense_rank"], run.popular[rows[order]], bought)
        return _Ranked(item_ids[order], rows[order], scores[order], why, ranked)

    def _item(self, run: _Run, item_id: str, score: float, reasons: list[str]) -> SearchItem:
        row = run.catalogue.row_of.get_loc(item_id)
        title, category, price = run.catalogue.shown[row]
        return SearchItem(item_id, round(float(score), 6), title, category, price, list(reasons))

    def _answer(
        self,
        run: _Run,
        query: str,
        normalised: str,
        ranked: _Ranked,
        k: int,
        source: str,
        personalised: bool,
    ) -> SearchAnswer:
        items = [
            self._item(run, str(item), score, why)
            for item, score, why in zip(
                ranked.item_ids[:k], ranked.scores[:k], ranked.reasons[:k], strict=True
            )
        ]
        return SearchAnswer(query, normalised, source, personalised, run.run_id, items)


# ----- loading a run ----------------------------------------------------------------------------------------
def _stat(path: Path) -> tuple:
    try:
        info = path.stat()
    except FileNotFoundError:
        return ()
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _signature(settings: Settings, run_dir: Path) -> tuple:
    """What a reload watches: the current run, the published head results and the live warehouse build."""
    return (
        str(run_dir),
        _stat(settings.published_dir / PUBLISHED_RESULTS),
        os.path.realpath(settings.live_dir),
    )


def has_search(run_dir: Path) -> bool:
    """Whether a run folder holds search artefacts (its source had a search log)."""
    return (run_dir / sf.RANKER_DIR / "search_ranker.txt").exists()


def _latest(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest snapshot per key: what materialization wrote to the online store."""
    return frame.sort_values("event_timestamp").drop_duplicates(keys, keep="last").reset_index(drop=True)


def _load_run(settings: Settings, run_dir: Path, published: bool | None) -> _Run:
    """A run's artefacts; head results from the publication (True), the run folder (False) or none
    (None)."""
    from scoring.training.finetune import load_model

    manifest = json.loads((run_dir / "manifest.json").read_text())
    if not has_search(run_dir):
        skipped = manifest.get("stages", {}).get("search_rank", {}).get("skipped")
        raise SearchUnavailable(
            f"run {manifest['run_id']} has no search: {skipped or 'its search stages did not run'}"
        )
    signature = _signature(settings, run_dir)
    model = load_model(str(run_dir / "model"), "cpu", settings.max_seq_length)
    model.eval()
    items = pd.read_parquet(run_dir / SEARCH_ITEMS)
    item_ids = items["item_id"].astype(str).to_numpy()
    faiss = faiss_index.load(run_dir / "items.faiss")
    vectors = np.load(run_dir / "item_embeddings.npy")
    retriever = HybridRetriever.from_settings(
        settings, LexicalIndex.load(run_dir / LEXICAL_DIR), faiss, item_ids, items, item_vectors=vectors
    )
    ranker = SearchRanker.load(run_dir / sf.RANKER_DIR)
    ranker.threads = 1  # a hundred rows: threads cost more than they save
    columns = ["item_id", "event_timestamp", sf.POPULARITY]
    item_stats = pd.read_parquet(tables.mart_path(settings, "fct_item_stats"), columns=columns)
    popularity = _latest(item_stats, ["item_id"]).set_index("item_id")[sf.POPULARITY]
    items["popularity"] = popularity.reindex(items["item_id"].astype(str)).to_numpy(dtype=float)
    catalogue = sf.Catalogue(items[sf.CATALOGUE_COLUMNS])
    item_search = _latest(pd.read_parquet(tables.mart_path(settings, "fct_item_search_stats")), ["item_id"])
    query_items = _latest(
        pd.read_parquet(tables.mart_path(settings, "fct_query_item_stats")), ["query", "item_id"]
    )[["query", "item_id", *sf.QUERY_ITEM_COLUMNS]]
    by_query = {str(q): group.reset_index(drop=True) for q, group in query_items.groupby("query", sort=False)}
    columns = list(dict.fromkeys([*sf.CANDIDATE_COLUMNS, *ranker.features, *sf.USER_FEATURES]))
    popular = sf.popular_items(
        catalogue.items["popularity"].to_numpy(dtype=float), settings.search_popular_share
    )
    head, published_from = _load_head(settings, run_dir, manifest["run_id"], published, catalogue, columns)
    return _Run(
        run_id=manifest["run_id"],
        run_dir=run_dir,
        signature=signature,
        model=model,
        retriever=retriever,
        ranker=ranker,
        catalogue=catalogue,
        columns=columns,
        item_search_stats=item_search[["item_id", *sf.ITEM_SEARCH_COLUMNS]],
        query_items=by_query,
        live=sf.LiveFeatures(catalogue, item_search, query_items)
        if sf.LiveFeatures.covers(columns)
        else None,
        popular=popular,
        head=head,
        published_from=published_from,
        query_vector=_query_vectors(model, settings.search_query_cache_size),
    )


def _query_vectors(model: Any, size: int) -> Callable[[str], np.ndarray]:
    """A normalised query's vector from the run's encoder, one query at a time (as every live search
    encodes it, so a cached vector is the one a fresh encoding gives), the last `size` kept per run: a
    repeated tail query skips the encoder, most of a live search's time. Cached vectors are read-only."""

    def vector(query: str) -> np.ndarray:
        encoded = sf.encode(model, [query])[0]
        encoded.setflags(write=False)
        return encoded

    return functools.lru_cache(maxsize=size)(vector) if size else vector


def _load_head(
    settings: Settings,
    run_dir: Path,
    run_id: str,
    published: bool | None,
    catalogue: sf.Catalogue,
    columns: list[str],
) -> tuple[dict[str, _Head], str]:
    """Head results: the publication when it is this run's, else the run folder's own (the same rows),
    with each head query's candidates and features (for re-ranking a known shopper)."""
    if published is None:
        return {}, ""
    source = run_dir / RESULTS
    if published:
        public = settings.published_dir / PUBLISHED_RESULTS
        if public.exists():
            ids = pd.read_parquet(public, columns=["run_id"])["run_id"].unique()
            if list(ids) == [run_id]:
                source = public
    if not source.exists():
        return {}, ""
    results = pd.read_parquet(source)
    pools: dict[str, _Ranked] = {}
    if (run_dir / HEAD_POOL).exists():
        for query, group in pd.read_parquet(run_dir / HEAD_POOL).groupby("query", sort=False):
            item_ids = group["item_id"].to_numpy().astype(str)
            if not set(columns) <= set(group.columns):
                break  # written by another version of the ranker: publish-only, no re-ranking
            features = {c: group[c].to_numpy(dtype=float) for c in columns}
            rows = catalogue.rows(item_ids)
            pools[str(query)] = _Ranked(item_ids, rows, np.empty(0), [], features)
    head = {
        row.query: _Head(
            item_ids=list(row.item_ids),
            scores=[float(s) for s in row.scores],
            reasons=[[r for r in str(text).split(",") if r] for text in row.reasons],
            pool=pools.get(row.query),
        )
        for row in results.itertuples(index=False)
    }
    return head, str(source)
