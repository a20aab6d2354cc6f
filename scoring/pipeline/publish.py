"""Publish a run's recommendations: Parquet, a DuckDB table and the Feast online store.

Every target is replaced whole, never edited in place: the Parquet file by an atomic rename, the
DuckDB table inside one transaction, and Feast's online `user_recommendations` rows by a swap of the
whole table in one SQLite transaction (scoring/features/feature_store.py), so after a publish the online store
serves exactly the published users: a user the run dropped loses the old list, and no reader ever sees
neither list. A run that fails before publishing leaves the previous publication as it was; publishing
twice is harmless.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd

from scoring.features import feature_store
from scoring.settings import Settings

SERVING_DB = "serving.duckdb"


def _replace_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def per_user_lists(recs: pd.DataFrame, run_id: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per user with the ordered item ids, scores and sources: Feast's user_recommendations."""
    ordered = recs.sort_values(["user_id", "rank"])
    grouped = ordered.groupby("user_id", sort=True)
    lists = pd.DataFrame(
        {
            "item_ids": grouped["item_id"].apply(list),
            "scores": grouped["score"].apply(lambda s: [float(v) for v in s]),
            "sources": grouped["source"].apply(list),
        }
    ).reset_index()
    lists["run_id"] = run_id
    lists["event_timestamp"] = pd.Timestamp(as_of).tz_localize(None)
    return lists


def publish(
    settings: Settings, recs: pd.DataFrame, run_id: str, as_of: pd.Timestamp, scratch_dir: Path
) -> dict:
    """Publish to every target; `scratch_dir` (the run folder) holds the online rows until the swap."""
    recs = recs.assign(run_id=run_id)
    lists = per_user_lists(recs, run_id, as_of)
    published = settings.published_dir
    _replace_parquet(recs, settings.published_recommendations)
    _replace_parquet(lists, published / "user_recommendations.parquet")
    with duckdb.connect(str(published / SERVING_DB)) as con:
        con.begin()
        con.register("recs", recs)
        con.execute("create or replace table recommendations as select * from recs")
        con.commit()
    live = settings.online_store_path
    scratch = scratch_dir / "online_store.db"
    fs = feature_store.store(settings, scratch)
    table = feature_store.online_table(fs, feature_store.RECOMMENDATIONS_VIEW)
    feature_store.prepare_scratch(live, scratch, {table})
    fs.write_to_online_store(feature_store.RECOMMENDATIONS_VIEW, lists)
    feature_store.swap_online_tables(live, scratch, replace={table})
    scratch.unlink()
    return {
        "parquet": str(settings.published_recommendations),
        "duckdb": f"{published / SERVING_DB}:recommendations",
        "feast_view": "user_recommendations",
        "users": int(lists.shape[0]),
        "rows": int(recs.shape[0]),
    }
