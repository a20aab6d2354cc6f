"""The search stages of a scoring run, after `index` (registered in scoring/pipeline/stages.py):

- `search_index`: the catalogue the engine shows (search_items.parquet: id, text, title, category, colour,
  material, price, in FAISS order) and a BM25 index with typo tolerance over the same item texts the
  encoder embeds (search_lexical/).
- `search_rank`: the learned search ranker, trained on the search log's label window. Each logged search
  gets the hybrid retriever's candidates for its normalised query; a candidate's label is the shopper's
  strongest action on it (purchase 3 > cart 2 > click 1 > none 0); its features are Feast's
  search_ranking_v1 views (query, query x item and item search statistics, item popularity) and the
  shopper's recent purchases (user_history), all joined point-in-time as of the window's start, so no
  search sees its own or any later action. Two rankers learn from the window's earlier searches: the
  personalised one and the same ranker without user features. Both are scored on the later searches of
  logged-in shoppers (NDCG@10 and MRR@10, gains as the labels), and the manifest records both with a
  paired bootstrap interval of the difference: the personalisation comparison. The personalised ranker
  is the one shipped (search_ranker.txt / .json); the other is kept beside it.
- `search_head`: the head queries, the most frequent normalised queries that together make up
  `search_head_share` of the searches in the last `search_head_window_days` (head_queries.parquet), each
  answered by the engine itself for an anonymous shopper (search_results.parquet, published with the
  recommendations) with its candidates' features kept for re-ranking a known shopper
  (search_head_pool.parquet).

A source without a search log (Online Retail) records "no search log" in each stage and writes nothing;
publishing then publishes no search results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval import index as faiss_index
from retrieval.hybrid import HybridRetriever
from retrieval.lexical import LexicalIndex
from scoring.evaluation import metrics
from scoring.features import feature_store
from scoring.pipeline.run_folder import RunFolder
from scoring.ranking.search_rank import SearchRanker
from scoring.search import engine as search_engine
from scoring.search import features as sf
from scoring.settings import Settings
from scoring.warehouse import tables

NO_LOG = "no search log: the source has no searches"
SEARCH_RANKING_SERVICE = "search_ranking_v1"


def search_log(settings: Settings) -> pd.DataFrame | None:
    """The clean search log (fct_searches), or None when the source has none."""
    path = tables.mart_path(settings, "fct_searches")
    if not path.exists():
        return None
    log = pd.read_parquet(path)
    return log if len(log) else None


def _as_of(run: RunFolder) -> pd.Timestamp:
    return pd.Timestamp(run.manifest["stages"]["training_pairs"]["as_of"])


def _catalogue_items(settings: Settings, run: RunFolder) -> pd.DataFrame:
    """The run's items (FAISS order) with what a result shows and what the ranker and filters read."""
    items = pd.read_parquet(run.path("items.parquet"))
    dim = pd.read_parquet(tables.mart_path(settings, "dim_items"))
    dim = dim.drop_duplicates("item_id").set_index("item_id")
    price = dim["list_price"].fillna(dim["median_unit_price"])
    aligned = items[["item_id", "text"]].copy()
    for column, values in (
        ("title", dim["title"]),
        ("category", dim["category"]),
        ("colour", dim["colour"]),
        ("material", dim["material"]),
        ("price", price.astype(float)),
    ):
        aligned[column] = values.reindex(aligned["item_id"]).to_numpy()
    return aligned


# ----- search_index ---------------------------------------------------------------------------------------
def build_search_index(settings: Settings, run: RunFolder) -> dict:
    if search_log(settings) is None:
        return {"skipped": NO_LOG}
    items = _catalogue_items(settings, run)
    items.to_parquet(run.path(search_engine.SEARCH_ITEMS), index=False)
    lexical = LexicalIndex.build(
        items["item_id"].tolist(),
        items["text"].tolist(),
        typo_tolerant=settings.search_typo_tolerant,
        max_edit_distance=settings.search_typo_max_edit_distance,
        min_typo_length=settings.search_typo_min_length,
        distance_penalty=settings.search_typo_distance_penalty,
        k1=settings.search_bm25_k1,
        b=settings.search_bm25_b,
    )
    lexical.save(run.path(search_engine.LEXICAL_DIR))
    return {"items": len(items), "vocabulary": len(lexical.vocabulary)}


# ----- search_rank ----------------------------------------------------------------------------------------
def _retriever(settings: Settings, run: RunFolder, items: pd.DataFrame) -> HybridRetriever:
    return HybridRetriever.from_settings(
        settings,
        LexicalIndex.load(run.path(search_engine.LEXICAL_DIR)),
        faiss_index.load(run.path("items.faiss")),
        items["item_id"].astype(str).to_numpy(),
        items,
        item_vectors=np.load(run.path("item_embeddings.npy")),
    )


def labelled_searches(log: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, cap: int) -> tuple:
    """(searches, labels) of the window [start, end): one row per search that led to an action (query,
    user_id, searched_at), the latest `cap` of them, and its best gain per item."""
    window = log[(log["searched_at"] >= start) & (log["searched_at"] < end)]
    acted = window[window["action"].isin(list(sf.GAINS))]
    labels = (
        acted.assign(gain=acted["action"].map(sf.GAINS))
        .groupby(["search_id", "item_id"], as_index=False)["gain"]
        .max()
    )
    searches = (
        window[window["search_id"].isin(labels["search_id"])]
        .groupby("search_id", as_index=False)
        .agg(query=("query", "first"), user_id=("user_id", "first"), searched_at=("searched_at", "first"))
        .sort_values(["searched_at", "search_id"])
        .tail(cap)
        .reset_index(drop=True)
    )
    return searches, labels[labels["search_id"].isin(searches["search_id"])]


def _service_refs(settings: Settings) -> dict[str, list[str]]:
    """The feature references of search_ranking_v1, by view."""
    service = feature_store.store(settings).get_feature_service(SEARCH_RANKING_SERVICE)
    return {
        projection.name: [f"{projection.name}:{feature.name}" for feature in projection.features]
        for projection in service.feature_view_projections
    }


def point_in_time(
    settings: Settings, candidates: pd.DataFrame, users: pd.Series, at: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """Feast's point-in-time values, as of `at`, of every statistic the ranker reads for these candidates
    (query, item_id) and users: one join per entity set, over search_ranking_v1's views."""
    refs = _service_refs(settings)

    def join(keys: pd.DataFrame, features: list[str]) -> pd.DataFrame:
        entity_df = keys.drop_duplicates().reset_index(drop=True).assign(event_timestamp=at)
        joined = feature_store.historical(settings, entity_df, features)
        return joined.drop(columns=["event_timestamp"])

    queries = candidates[["query"]]
    pairs = candidates[["query", "item_id"]]
    items = candidates[["item_id"]]
    known = users.dropna().astype(str)
    out = {
        "query_stats": join(queries, refs[sf.QUERY_VIEW]),
        "query_item_stats": join(pairs, refs[sf.QUERY_ITEM_VIEW]),
        "item_search_stats": join(items, refs[sf.ITEM_SEARCH_VIEW]),
        "item_stats": join(items, [f"{sf.ITEM_VIEW}:{sf.POPULARITY}"]),
    }
    out["histories"] = (
        join(pd.DataFrame({"user_id": known}), [sf.USER_HISTORY])
        if len(known)
        else pd.DataFrame(columns=["user_id", "recent_item_ids"])
    )
    return out


def _evaluate(
    scored: pd.DataFrame, labels: pd.DataFrame, score: str, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Per search: NDCG@k and MRR@k of the candidates ordered by `score` (ties by item id), against every
    item the shopper acted on, retrieved or not (scoring/evaluation/metrics.py)."""
    ordered = scored.sort_values(["search_id", score, "item_id"], ascending=[True, False, True])
    ranked = ordered.groupby("search_id", sort=False)["item_id"].agg(list)
    acted = (
        labels[labels["gain"] > 0]
        .groupby("search_id")[["item_id", "gain"]]
        .apply(lambda g: dict(zip(g["item_id"], g["gain"], strict=True)))
    )
    ndcg, mrr = [], []
    for search_id, items in ranked.items():
        gains = acted.get(search_id, {})
        value = metrics.graded_ndcg_at_k(gains, items, k)
        ndcg.append(0.0 if np.isnan(value) else value)
        mrr.append(metrics.reciprocal_rank_at_k(set(gains), items, k))
    return np.array(ndcg), np.array(mrr)


def _interval(values: np.ndarray, seed: int, resamples: int = 1000) -> list[float]:
    """Bootstrap 95% interval of a mean over searches."""
    if not len(values):
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def train_search_ranker(settings: Settings, run: RunFolder) -> dict:
    log = search_log(settings)
    if log is None:
        return {"skipped": NO_LOG}
    as_of = _as_of(run)
    start = as_of - pd.Timedelta(days=settings.search_label_window_days)
    searches, labels = labelled_searches(log, start, as_of, settings.search_max_train_searches)
    if searches.empty:
        return {"skipped": f"no search led to an action in the label window from {start}"}
    items = pd.read_parquet(run.path(search_engine.SEARCH_ITEMS))
    from scoring.training.finetune import load_model

    model = load_model(str(run.path("model")), "cpu", settings.max_seq_length)
    queries = sorted(searches["query"].unique())
    found = sf.candidates(
        _retriever(settings, run, items),
        queries,
        sf.encode(model, queries, settings.embed_batch_size),
        settings.search_pool,
    )
    known = searches["user_id"].where(searches["user_id"].notna() & (searches["user_id"] != ""))
    feast = point_in_time(settings, found, known, start)
    popularity = feast["item_stats"].set_index("item_id")[sf.POPULARITY]
    catalogue = sf.Catalogue(
        items.assign(popularity=popularity.reindex(items["item_id"].astype(str)).to_numpy(dtype=float))[
            sf.CATALOGUE_COLUMNS
        ]
    )
    rows = searches.assign(user_id=known).merge(found, on="query", how="inner")
    featured = sf.ranking_frame(
        rows,
        catalogue,
        feast["query_stats"],
        feast["query_item_stats"],
        feast["item_search_stats"],
        feast["histories"],
    )
    featured = featured.merge(labels, on=["search_id", "item_id"], how="left")
    featured["gain"] = featured["gain"].fillna(0.0)
    featured.to_parquet(run.path("search_training.parquet"), index=False)

    # The window's last share of searches, in time, is held out to compare the two rankers.
    cut = searches["searched_at"].quantile(1.0 - settings.search_holdout_share)
    held_out = featured["searched_at"] > cut
    train = featured[~held_out]
    personal = SearchRanker.from_settings(settings, personalised=True)
    personal.features = list(sf.PERSONAL_FEATURES)
    personal.fit(train, train["gain"].to_numpy(), group="search_id")
    without_user = SearchRanker.from_settings(settings, personalised=False)
    without_user.features = list(sf.NON_PERSONAL_FEATURES)
    without_user.fit(train, train["gain"].to_numpy(), group="search_id")
    personal.save(run.path(sf.RANKER_DIR))
    without_user.save(run.path(sf.BASELINE_RANKER_DIR))

    test = featured[held_out & featured["user_id"].notna()].copy()
    comparison: dict = {
        "held_out_after": str(cut),
        "logged_in_searches": int(test["search_id"].nunique()),
    }
    if len(test):
        test["personalised"] = personal.predict(test)
        test["without_user"] = without_user.predict(test)
        test_labels = labels[labels["search_id"].isin(test["search_id"])]
        figures = {}
        for name in ("personalised", "without_user", "fused_score"):
            ndcg, mrr = _evaluate(test, test_labels, name)
            figures[name] = (ndcg, mrr)
            label = "retrieval_only" if name == "fused_score" else name
            comparison[label] = {
                "ndcg@10": round(float(ndcg.mean()), 4),
                "ndcg@10_95ci": _interval(ndcg, settings.seed),
                "mrr@10": round(float(mrr.mean()), 4),
                "mrr@10_95ci": _interval(mrr, settings.seed),
            }
        lift = figures["personalised"][0] - figures["without_user"][0]
        comparison["ndcg@10_gain"] = round(float(lift.mean()), 4)
        comparison["ndcg@10_gain_95ci"] = _interval(lift, settings.seed)
        comparison["personalisation_pays"] = bool(_interval(lift, settings.seed)[0] > 0)
    return {
        "label_start": str(start),
        "searches": int(len(searches)),
        "train_searches": int(train["search_id"].nunique()),
        "rows": int(len(featured)),
        "candidates_per_query": round(len(found) / max(1, len(queries)), 1),
        "positives": int((featured["gain"] > 0).sum()),
        "shipped": "personalised",
        "ranker": personal.stats,
        "importances": dict(list(personal.importances().items())[:12]),
        "personalisation": comparison,
    }


# ----- search_head --------------------------------------------------------------------------------------
def head_queries(log: pd.DataFrame, as_of: pd.Timestamp, days: int, share: float, cap: int) -> pd.DataFrame:
    """The most frequent normalised queries that together make up `share` of the searches in the `days`
    before `as_of` (at most `cap` of them): query, searches, share, cumulative_share."""
    window = log[(log["searched_at"] >= as_of - pd.Timedelta(days=days)) & (log["searched_at"] < as_of)]
    counts = window.groupby("query")["search_id"].nunique().rename("searches").reset_index()
    counts = counts.sort_values(["searches", "query"], ascending=[False, True]).reset_index(drop=True)
    total = max(1, int(counts["searches"].sum()))
    counts["share"] = counts["searches"] / total
    counts["cumulative_share"] = counts["share"].cumsum()
    # The smallest prefix whose cumulative share reaches `share`.
    reached = int(np.searchsorted(counts["cumulative_share"].to_numpy(), share - 1e-12)) + 1
    return counts.head(min(reached, cap)).reset_index(drop=True)


def answer_head_queries(settings: Settings, run: RunFolder) -> dict:
    log = search_log(settings)
    if log is None or not search_engine.has_search(run.root):
        return {"skipped": NO_LOG}
    as_of = _as_of(run)
    head = head_queries(
        log,
        as_of,
        settings.search_head_window_days,
        settings.search_head_share,
        settings.search_head_max_queries,
    )
    head.to_parquet(run.path("head_queries.parquet"), index=False)
    engine = search_engine.SearchEngine.from_run(settings, run.root)
    ranked = engine.rank_queries(head["query"].tolist())
    ranked["rank"] = ranked.groupby("query", sort=False).cumcount() + 1
    pool = ranked.drop(columns=["score", "reasons", "rank"])
    pool.to_parquet(run.path(search_engine.HEAD_POOL), index=False)
    top = ranked[ranked["rank"] <= settings.search_head_k]
    grouped = top.groupby("query", sort=False)
    results = pd.DataFrame(
        {
            "item_ids": grouped["item_id"].apply(list),
            "scores": grouped["score"].apply(lambda s: [float(v) for v in s]),
            "reasons": grouped["reasons"].apply(lambda rs: [",".join(r) for r in rs]),
        }
    ).reset_index()
    results.to_parquet(run.path(search_engine.RESULTS), index=False)
    window = log[
        (log["searched_at"] >= as_of - pd.Timedelta(days=settings.search_head_window_days))
        & (log["searched_at"] < as_of)
    ]
    return {
        "head_queries": int(len(head)),
        "distinct_queries": int(window["query"].nunique()),
        "share_of_searches": round(float(head["share"].sum()), 4),
        "target_share": settings.search_head_share,
        "window_days": settings.search_head_window_days,
        "results_per_query": round(float(results["item_ids"].map(len).mean()), 1) if len(results) else 0,
    }


def search_results(run: RunFolder) -> pd.DataFrame | None:
    """The run's head results to publish, or None when the run has no search."""
    path = run.path(search_engine.RESULTS)
    return pd.read_parquet(path) if path.exists() else None
