"""Rank each user's candidates with the model score and Feast's ranking_v1 features.

The first ranker is a transparent linear blend: embedding similarity from the fine-tuned model, the
item-kNN score, the user's own history with the item (times bought, recency) and the item's recent
popularity. Features come from Feast's `ranking_v1` service, joined as of the scoring time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring import feature_store
from scoring.settings import Settings

RANKING_SERVICE = "ranking_v1"

# Weights of the blend; each term is scaled to roughly [0, 1] first.
WEIGHTS = {"embedding": 1.0, "co_purchase": 0.8, "times_bought": 0.6, "recency": 0.6, "popularity": 0.3}


def with_features(settings: Settings, candidates: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Candidates joined point-in-time with the ranking_v1 features."""
    fs = feature_store.store(settings)
    entity_df = candidates[["user_id", "item_id"]].assign(event_timestamp=as_of)
    features = fs.get_historical_features(
        entity_df=entity_df, features=fs.get_feature_service(RANKING_SERVICE)
    ).to_df()
    return candidates.merge(features.drop(columns=["event_timestamp"]), on=["user_id", "item_id"], how="left")


def _scaled(values: pd.Series) -> pd.Series:
    values = values.fillna(0).astype(float)
    top = values.max()
    return values / top if top > 0 else values


def score(frame: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """The blended score of each candidate row."""
    days_since = (as_of.timestamp() - frame["last_bought_at"].astype(float)) / 86400
    recency = np.exp(-days_since.fillna(np.inf).clip(lower=0) / 60)
    terms = {
        "embedding": frame["embedding"].astype(float),
        "co_purchase": frame.groupby("user_id")["co_purchase"].transform(_scaled),
        "times_bought": _scaled(np.log1p(frame["times_bought"].fillna(0).astype(float))),
        "recency": recency,
        "popularity": _scaled(np.log1p(frame["units_30d"].fillna(0).astype(float))),
    }
    return sum(WEIGHTS[name] * values for name, values in terms.items())


def top_n(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n best candidates per user as (user_id, item_id, rank, score, source)."""
    ordered = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    ordered["rank"] = ordered.groupby("user_id").cumcount() + 1
    best = ordered[ordered["rank"] <= n]
    return best[["user_id", "item_id", "rank", "score", "source"]].reset_index(drop=True)
