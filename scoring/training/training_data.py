"""Text inputs of the two-tower model, read through Feast so training is point-in-time correct.

One encoder serves two jobs, so there are two kinds of training pair, told apart by the `task` column:
- "recommend": (the user's history just before a purchase, the purchased item). The history comes from
  Feast's `user_history` view joined as of one second before the purchase, so the purchase itself and
  anything after it can never leak into the query.
- "search": (the normalised query of a search, the item the shopper clicked, carted or bought from its
  results), from the governed search log (the fct_searches mart: PII already redacted, bots and broken
  rows quarantined), for searches before the scoring time. A workspace without a search log (Online
  Retail) has no search pairs, and fine-tuning learns recommendation alone.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd

from scoring.features import feature_store
from scoring.settings import Settings
from scoring.warehouse import tables

HISTORY_FEATURE = "user_history:recent_item_ids"
RECOMMEND, SEARCH = "recommend", "search"
PAIR_COLUMNS = ["user_id", "item_id", "event_timestamp", "query", "positive", "task"]


def item_texts(settings: Settings) -> pd.DataFrame:
    """One text per item (title and category), the item tower's input."""
    items = pd.read_parquet(tables.mart_path(settings, "dim_items"), columns=["item_id", "title", "category"])
    category = items["category"].fillna("")
    items["text"] = np.where(category != "", items["title"] + " (" + category + ")", items["title"])
    return items[["item_id", "text"]].sort_values("item_id").reset_index(drop=True)


def history_queries(histories: pd.Series, titles: dict[str, str]) -> pd.Series:
    """A user's query text: the titles of the recent items, newest first."""
    return histories.map(lambda ids: " | ".join(titles[i] for i in ids if i in titles))


def training_pairs(settings: Settings, items: pd.DataFrame) -> pd.DataFrame:
    """(query, positive) pairs for every recent purchase of a novel item by a user with a history."""
    purchases = tables.read(
        settings,
        f"""
        select user_id, item_id, min(ordered_at) as ordered_at
        from fct_order_lines
        where user_id is not null
        group by user_id, item_id, order_id
        order by ordered_at desc, user_id, item_id, order_id
        limit {int(settings.max_training_pairs * 2)}
        """,
    )
    entity_df = purchases.assign(event_timestamp=purchases["ordered_at"] - timedelta(seconds=1))
    joined = feature_store.historical(
        settings, entity_df[["user_id", "item_id", "event_timestamp"]], [HISTORY_FEATURE]
    )
    # Feast returns the entity rows in an order of its own: newest first again, so that the cut below
    # (and the seeded shuffle after it) sees the same rows in the same order in every process.
    joined = joined.dropna(subset=["recent_item_ids"]).sort_values(
        ["event_timestamp", "user_id", "item_id"], ascending=[False, True, True], kind="stable"
    )
    has_history = joined["recent_item_ids"].map(len) > 0
    novel = [
        item not in set(hist) for item, hist in zip(joined["item_id"], joined["recent_item_ids"], strict=True)
    ]
    joined = joined[has_history & np.array(novel, dtype=bool)]
    titles = dict(zip(items["item_id"], items["text"], strict=True))
    pairs = pd.DataFrame(
        {
            "user_id": joined["user_id"].to_numpy(),
            "item_id": joined["item_id"].to_numpy(),
            "event_timestamp": pd.to_datetime(joined["event_timestamp"], utc=True)
            .dt.tz_localize(None)
            .to_numpy(),
            "query": history_queries(joined["recent_item_ids"], titles).to_numpy(),
            "positive": joined["item_id"].map(titles).to_numpy(),
            "task": RECOMMEND,
        }
    ).dropna()
    pairs = pairs[pairs["query"] != ""]
    return (
        pairs.head(settings.max_training_pairs)
        .sample(frac=1.0, random_state=settings.seed)
        .reset_index(drop=True)
    )


def search_pairs(settings: Settings, items: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """(normalised query, acted-on item) pairs from the clean search log, newest first up to the budget.

    One pair per search and item: the click, cart and purchase rows of one search are one lesson, not
    three. A query that was nothing but redacted PII ("[email]") teaches nothing and is left out. Returns
    no rows where the workspace has no search log.
    """
    sql = f"""
        select search_id, any_value(user_id) as user_id, item_id, min(searched_at) as searched_at,
               any_value(query) as query
        from fct_searches
        where item_id is not null
          and action in ('click', 'cart', 'purchase')
          and searched_at < timestamp '{pd.Timestamp(as_of).isoformat(sep=" ")}'
          and trim(regexp_replace(query, '\\[(email|phone)\\]', '', 'g')) <> ''
        group by search_id, item_id
        order by searched_at desc, search_id, item_id
        limit {int(settings.max_training_pairs)}
    """
    no_pairs = pd.DataFrame({c: pd.Series(dtype=object) for c in PAIR_COLUMNS})
    if not tables.mart_path(settings, "fct_searches").exists():
        return no_pairs  # a warehouse built without the search models
    try:
        acted = tables.read(settings, sql)
    except duckdb.CatalogException:  # no search log in this workspace's warehouse
        return no_pairs
    titles = dict(zip(items["item_id"], items["text"], strict=True))
    pairs = pd.DataFrame(
        {
            "user_id": acted["user_id"].to_numpy(),
            "item_id": acted["item_id"].to_numpy(),
            "event_timestamp": pd.to_datetime(acted["searched_at"]).to_numpy(),
            "query": acted["query"].to_numpy(),
            "positive": acted["item_id"].map(titles).to_numpy(),
            "task": SEARCH,
        }
    )
    pairs = pairs.dropna(subset=["positive", "query"])
    return pairs.sample(frac=1.0, random_state=settings.seed).reset_index(drop=True)


def joint_pairs(settings: Settings, items: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Both tasks' pairs in one frame: the recommendation pairs, then the search pairs."""
    frames = [training_pairs(settings, items), search_pairs(settings, items, as_of)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PAIR_COLUMNS})
    return pd.concat(frames, ignore_index=True)[PAIR_COLUMNS]


def scoring_time(settings: Settings) -> pd.Timestamp:
    """The moment the batch scores as of: just after the last clean purchase, not the wall clock."""
    latest = tables.read(settings, "select max(ordered_at) as t from fct_order_lines")["t"].iloc[0]
    return pd.Timestamp(latest) + timedelta(seconds=1)


def label_window_days(settings: Settings, as_of: pd.Timestamp) -> int:
    """How far back the ranker's labels reach: the setting, or (unset) the shop's own cadence — the
    `label_return_quantile` (0.95) of the gaps between a shopper's consecutive order days before `as_of`,
    within [label_window_min_days, label_window_max_days]: the span inside which nearly every return
    happens, so the ranker learns from most of the shoppers who come back at all. A grocery shop whose
    shoppers return weekly learns from a few weeks; a gift shop looks back months (the demo shop: 50
    days). A shorter window (the 0.75 quantile: 19 days on the demo shop) left
    the ranker too few buyers to beat decayed repurchase on its holdout."""
    if settings.label_window_days is not None:
        return settings.label_window_days
    gaps = tables.read(
        settings,
        f"""
        with days as (
            select distinct user_id, cast(ordered_at as date) as day
            from fct_order_lines
            where user_id is not null and ordered_at < timestamp '{as_of}'
        )
        select quantile_cont(gap, {settings.label_return_quantile}) as days
        from (
            select date_diff('day', lag(day) over (partition by user_id order by day), day) as gap
            from days
        )
        where gap is not null
        """,
    )["days"].iloc[0]
    measured = settings.label_window_max_days if pd.isna(gaps) else round(float(gaps))
    return int(min(max(measured, settings.label_window_min_days), settings.label_window_max_days))


def user_queries(settings: Settings, items: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every active user's latest history and query text as of the scoring time."""
    users = tables.read(settings, "select distinct user_id from fct_order_lines where user_id is not null")
    entity_df = users.assign(event_timestamp=as_of)
    joined = feature_store.historical(settings, entity_df, [HISTORY_FEATURE]).dropna(
        subset=["recent_item_ids"]
    )
    titles = dict(zip(items["item_id"], items["text"], strict=True))
    joined["query"] = history_queries(joined["recent_item_ids"], titles)
    return joined[["user_id", "recent_item_ids", "query"]].sort_values("user_id").reset_index(drop=True)
