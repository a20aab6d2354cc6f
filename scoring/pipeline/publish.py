"""Publish a run's recommendations: Parquet, a DuckDB table and the Feast online store.

A run's recommendations are two lists per user, each row with a reason a shopper can read (the select
stage, scoring/pipeline/lists.py): `top` (the top N, repeats allowed) and `discover` (the best items the
user never bought). The Parquet file and the DuckDB table `recommendations` hold one row per user, list
and rank (user_id, item_id, rank, score, source, list, reason, run_id); Feast's `user_recommendations`
holds one row per user with both lists (`per_user_lists`), served by `recommendations_v1`.

Every target is replaced whole, never edited in place: the Parquet file by an atomic rename, the
DuckDB table inside one transaction, and Feast's online `user_recommendations` rows by a swap of the
whole table in one SQLite transaction (scoring/features/feature_store.py), so after a publish the online store
serves exactly the published users: a user the run dropped loses the old list, and no reader ever sees
neither list. A run that fails before publishing leaves the previous publication as it was; publishing
twice is harmless.

A run that answered the shop's head search queries (scoring/search/stages.py) publishes them in the same
step and the same way: `search_results.parquet` (one row per normalised query, Feast's `search_results`
source), a DuckDB table `search_results` (one row per query and rank), and Feast's online
`search_results` rows, swapped in the same SQLite transaction as the recommendations. A run without a
search log (Online Retail) publishes an empty set of search results, so no reader keeps serving head
answers from another catalogue or an older run.

The same step writes `candidates.parquet`: each published user's best `serve_candidates` ranked candidates
(user_id, item_id, rank, score, repeat, times_bought, category, run_id), the pool the real-time
`/recommend` route re-ranks with a shopper's fresh session features, so its answers never drift from the
published lists' run. It is replaced whole like the recommendations, and holds exactly their users.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from retrieval import ordering
from scoring.features import feature_store
from scoring.settings import Settings
from scoring.warehouse import tables

SERVING_DB = "serving.duckdb"
SEARCH_RESULTS_FILE = "search_results.parquet"
CANDIDATES_FILE = "candidates.parquet"
# In a published run's folder: each user's inputs as the run saw them (`user_inputs`).
USER_INPUTS_FILE = "user_inputs.parquet"
# The published candidate pool's columns (`repeat` is the repeat source's time-decayed score).
CANDIDATES_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float64()),
        ("repeat", pa.float64()),
        ("times_bought", pa.int64()),
        ("category", pa.string()),
        ("run_id", pa.string()),
    ]
)

# The published search results' columns (Feast's `search_results` view reads the lists; `reasons` holds
# one comma-separated text per item, e.g. "lexical,semantic", as Feast has no list of lists).
SEARCH_RESULTS_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("item_ids", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float32())),
        ("reasons", pa.list_(pa.string())),
        ("run_id", pa.string()),
        ("event_timestamp", pa.timestamp("us")),
    ]
)


def _replace_parquet(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False, schema=schema)
    os.replace(tmp, path)


def search_results_frame(results: pd.DataFrame | None, run_id: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """The search results to publish in the published schema (none when the run has no search log).
    Results that already carry a `run_id` (an update republishing the last run's) keep it."""
    if results is None:
        return SEARCH_RESULTS_SCHEMA.empty_table().to_pandas()
    frame = results.assign(event_timestamp=pd.Timestamp(as_of).tz_localize(None))
    if "run_id" not in frame.columns:
        frame = frame.assign(run_id=run_id)
    return frame[SEARCH_RESULTS_SCHEMA.names].reset_index(drop=True)


def search_results_rows(lists: pd.DataFrame) -> pd.DataFrame:
    """One row per query and rank: the DuckDB table `search_results`."""
    rows = lists.explode(["item_ids", "scores", "reasons"]).rename(
        columns={"item_ids": "item_id", "scores": "score"}
    )
    rows = rows.dropna(subset=["item_id"])
    rows["rank"] = rows.groupby("query").cumcount() + 1
    rows["score"] = rows["score"].astype(float)
    rows["reasons"] = rows["reasons"].map(lambda text: [r for r in str(text).split(",") if r])
    return rows[["query", "rank", "item_id", "score", "reasons", "run_id"]].reset_index(drop=True)


def user_inputs(settings: Settings) -> pd.DataFrame:
    """A fingerprint per user of everything of their own that their list reads or that says they came
    back: a hash of their clean order lines and one of their sessions (every column, so a new visit, a
    late return or a corrected line changes it). `make update` rescores the users whose fingerprint
    changed since the last publication."""
    return tables.read(
        settings,
        """
        with lines as (
            select user_id, sum(hash(o)) as h from fct_order_lines o where user_id is not null group by 1
        ),
        sessions as (
            select user_id, sum(hash(s)) as h from fct_sessions s where user_id is not null group by 1
        )
        select
            user_id,
            cast(coalesce(lines.h, 0) as varchar) || ':' || cast(coalesce(sessions.h, 0) as varchar)
                as fingerprint
        from lines full outer join sessions using (user_id)
        order by user_id
        """,
    )


def candidates_frame(ranked: pd.DataFrame, n: int, run_id: str) -> pd.DataFrame:
    """Each user's `n` best ranked candidates (a run's ranked.parquet), best first in the lists' order
    (retrieval/ordering.py), in the published candidates' schema."""
    ordered = ordering.ordered(ranked, by="user_id")
    ordered = ordered.assign(rank=ordered.groupby("user_id").cumcount() + 1)
    top = ordered[ordered["rank"] <= n].assign(run_id=run_id)
    top = top.astype({"rank": "int32", "score": "float64", "repeat": "float64", "times_bought": "int64"})
    return top[CANDIDATES_SCHEMA.names].reset_index(drop=True)


# The published per-user lists (Feast's `user_recommendations` source), typed so that a run whose
# discover lists are all empty (discover_n = 0) still writes lists of strings and numbers.
USER_RECOMMENDATIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_ids", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("sources", pa.list_(pa.string())),
        ("reasons", pa.list_(pa.string())),
        ("discover_item_ids", pa.list_(pa.string())),
        ("discover_scores", pa.list_(pa.float64())),
        ("discover_reasons", pa.list_(pa.string())),
        ("run_id", pa.string()),
        ("event_timestamp", pa.timestamp("us")),
    ]
)
# Its fields per list: (list, field prefix, the recommendation columns gathered into lists).
LIST_FIELDS = (
    ("top", "", ("item_id", "score", "source", "reason")),
    ("discover", "discover_", ("item_id", "score", "reason")),
)


def per_user_lists(recs: pd.DataFrame, run_id: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per user, Feast's user_recommendations: the top list's `item_ids`, `scores`, `sources` and
    `reasons`, and the discover list's `discover_item_ids`, `discover_scores` and `discover_reasons`, each
    best first (a user without a discover list has empty ones). Each user's `run_id` is the one their
    rows carry (an update's merged lists mix runs), else `run_id`."""
    lists = pd.DataFrame({"user_id": np.sort(recs["user_id"].unique())})
    for name, prefix, columns in LIST_FIELDS:
        grouped = recs[recs["list"] == name].sort_values(["user_id", "rank"]).groupby("user_id", sort=True)
        for column in columns:
            values = grouped[column].agg(list)
            if column == "score":
                values = values.map(lambda scores: [float(v) for v in scores])
            field = lists["user_id"].map(values)
            lists[f"{prefix}{column}s"] = [v if isinstance(v, list) else [] for v in field]
    runs = recs.groupby("user_id")["run_id"].first() if "run_id" in recs.columns else {}
    lists["run_id"] = lists["user_id"].map(runs).fillna(run_id) if len(runs) else run_id
    lists["event_timestamp"] = pd.Timestamp(as_of).tz_localize(None)
    return lists[USER_RECOMMENDATIONS_SCHEMA.names]


def publish(
    settings: Settings,
    recs: pd.DataFrame,
    run_id: str,
    as_of: pd.Timestamp,
    scratch_dir: Path,
    search_results: pd.DataFrame | None = None,
    candidates: pd.DataFrame | None = None,
) -> dict:
    """Publish to every target; `scratch_dir` (the run folder) holds the online rows until the swap.

    `recs` rows keep their own `run_id` when they carry one (an update publishes its users' new rows
    beside the earlier runs' rows of everyone else); otherwise they get `run_id`. `candidates` is the
    published candidate pool (`candidates_frame`), restricted here to the published users; None
    publishes an empty pool.
    `search_results` (query, item_ids, scores, reasons) are the run's head search answers, published
    beside the recommendations; None (a source without a search log) publishes none.
    """
    if "run_id" not in recs.columns:
        recs = recs.assign(run_id=run_id)
    lists = per_user_lists(recs, run_id, as_of)
    if candidates is None:
        candidates = CANDIDATES_SCHEMA.empty_table().to_pandas()
    pool = candidates[candidates["user_id"].isin(set(lists["user_id"]))][CANDIDATES_SCHEMA.names]
    searches = search_results_frame(search_results, run_id, as_of)
    search_rows = search_results_rows(searches)
    published = settings.published_dir
    _replace_parquet(recs, settings.published_recommendations)
    _replace_parquet(lists, published / "user_recommendations.parquet", schema=USER_RECOMMENDATIONS_SCHEMA)
    _replace_parquet(searches, published / SEARCH_RESULTS_FILE, schema=SEARCH_RESULTS_SCHEMA)
    _replace_parquet(pool.reset_index(drop=True), published / CANDIDATES_FILE, schema=CANDIDATES_SCHEMA)
    with duckdb.connect(str(published / SERVING_DB)) as con:
        con.begin()
        con.register("recs", recs)
        con.execute("create or replace table recommendations as select * from recs")
        con.register("search_rows", search_rows)
        con.execute(
            "create or replace table search_results as select query, cast(rank as integer) as rank, "
            "item_id, score, cast(reasons as varchar[]) as reasons, run_id from search_rows"
        )
        con.commit()
    live = settings.online_store_path
    scratch = scratch_dir / "online_store.db"
    fs = feature_store.store(settings, scratch)
    views = {view.name for view in fs.list_feature_views()}
    writes = {feature_store.RECOMMENDATIONS_VIEW: lists}
    if feature_store.SEARCH_RESULTS_VIEW in views:
        writes[feature_store.SEARCH_RESULTS_VIEW] = searches
    tables = {feature_store.online_table(fs, view) for view in writes}
    feature_store.prepare_scratch(live, scratch, tables)
    for view, rows in writes.items():
        if len(rows):
            fs.write_to_online_store(view, rows)
    feature_store.swap_online_tables(live, scratch, replace=tables)
    scratch.unlink()
    return {
        "parquet": str(settings.published_recommendations),
        "duckdb": f"{published / SERVING_DB}:recommendations",
        "feast_view": "user_recommendations",
        "users": int(lists.shape[0]),
        "rows": int(recs.shape[0]),
        "rows_by_list": {str(k): int(n) for k, n in recs["list"].value_counts().sort_index().items()},
        "candidates": int(pool.shape[0]),
        "candidates_parquet": str(published / CANDIDATES_FILE),
        "search_queries": int(searches.shape[0]),
        "search_rows": int(search_rows.shape[0]),
        "search_parquet": str(published / SEARCH_RESULTS_FILE),
        "search_duckdb": f"{published / SERVING_DB}:search_results",
        "search_feast_view": feature_store.SEARCH_RESULTS_VIEW if len(writes) > 1 else None,
    }
