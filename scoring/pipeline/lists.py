"""The `select` stage: from the ranked candidates to what each shopper is shown, each item with a reason.

It reads `ranked.parquet` (the rank stage's score of every candidate, with each source's score,
`times_bought`, `last_bought_days` and `category`), picks each user's top list
(`top_n` items, repeats allowed, diversified as `Settings.diversity` says) and discover list (the best
`discover_n` items the user never bought) with scoring/ranking/select.py, gives every row a reason a
shopper can read (scoring/ranking/explain.py) and writes `recommendations.parquet`: user_id, item_id,
rank, score, source, list ('top' | 'discover'), reason. The validate stage checks the top list; publish
publishes both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.pipeline.run_folder import RunFolder
from scoring.ranking import explain, select
from scoring.settings import Settings
from scoring.warehouse import tables

COLUMNS = ["user_id", "item_id", "rank", "score", "source", "list", "reason"]


def _purchases(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every purchase line before the scoring time: what the candidates and the reasons know."""
    lines = tables.read(
        settings, "select user_id, item_id, ordered_at from fct_order_lines where user_id is not null"
    )
    return lines[lines["ordered_at"] < as_of]


def evidence(settings: Settings, run: RunFolder, as_of: pd.Timestamp) -> explain.Evidence:
    """What the reasons are drawn from: purchases before `as_of`, the run's item embeddings and the
    items' titles. Shared whole by every user's reasons (co-buyers are counted over everyone), so the
    sharded scorer (scoring/spark/sharded.py) hands the same evidence to each shard."""
    items = pd.read_parquet(tables.mart_path(settings, "dim_items"), columns=["item_id", "title"])
    return explain.Evidence(
        purchases=_purchases(settings, as_of)[["user_id", "item_id"]],
        item_ids=pd.read_parquet(run.path("items.parquet"), columns=["item_id"])["item_id"].to_numpy(),
        vectors=np.load(run.path("item_embeddings.npy")),
        titles=dict(zip(items["item_id"], items["title"].fillna(items["item_id"]), strict=True)),
    )


def choose(ranked: pd.DataFrame, evidence: explain.Evidence, settings: Settings) -> pd.DataFrame:
    """Both lists of the users in `ranked`, each row with its `rank`, `list` and `reason` (every column
    of `ranked` kept). Each user's lists read only their own candidates, so any split of the users by
    user gives the same rows (the sharded scorer calls this per shard)."""
    top = select.top_lists(ranked, settings.top_n, settings).assign(list="top")
    discover = select.discover_lists(ranked, settings.discover_n).assign(list="discover")
    recs = pd.concat([top, discover], ignore_index=True)
    recs["reason"] = explain.reasons(
        recs, evidence, settings.popular_window_days, settings.reason_min_co_buyers
    )
    return recs


def select_lists(settings: Settings, run: RunFolder, as_of: pd.Timestamp | None = None) -> dict:
    """Both lists with their reasons, written to `recommendations.parquet`. `as_of` is the scoring time
    (by default the one the run's first stage fixed; an update scores as of its own)."""
    if as_of is None:
        as_of = pd.Timestamp(run.manifest["stages"]["training_pairs"]["as_of"])
    recs = choose(pd.read_parquet(run.path("ranked.parquet")), evidence(settings, run, as_of), settings)
    top = recs[recs["list"] == "top"]
    discover = recs[recs["list"] == "discover"]
    recs[COLUMNS].to_parquet(run.path("recommendations.parquet"), index=False)
    return {
        "rows": len(recs),
        "users": int(top["user_id"].nunique()),
        "diversity": settings.diversity,
        "top_repeat_share": round(float((top["times_bought"] > 0).mean()), 4) if len(top) else 0.0,
        "top_categories_per_user": round(float(top.groupby("user_id")["category"].nunique().mean()), 2)
        if len(top)
        else 0.0,
        "discover_users": int(discover["user_id"].nunique()),
        "discover_per_user": round(len(discover) / max(1, discover["user_id"].nunique()), 1),
        "reasons": explain.kinds(recs["reason"]),
    }
