"""Rank candidates with a learned ranker over the model score and Feast's ranking_v1 features.

LightGBM, trained on labels from a window before the scoring time: candidates are generated
as of `label_start` from what was known then (Feast point-in-time features, purchases before it), and
an item is a positive when the user bought it in [label_start, as_of). The same features, computed as
of the scoring time, then rank the live candidates.

Two objectives: `binary` estimates P(bought) for every candidate alike, so the order among items the
user never bought is learned as well as the order among repeats (what the novel-items metric reads);
`lambdarank` optimises the top of each user's whole list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from retrieval.candidates import SOURCES
from scoring.features import feature_store
from scoring.settings import Settings

RANKING_SERVICE = "ranking_v1"

FEAST_FEATURES = [
    "orders_count",
    "monetary_value",
    "avg_order_value",
    "avg_basket_units",
    "distinct_items",
    "repeat_item_share",
    "tenure_days",
    "units_7d",
    "units_30d",
    "units_90d",
    "orders_30d",
    "distinct_buyers",
    "repeat_buyer_share",
    "avg_unit_price",
    "return_rate",
    "times_bought",
    "total_quantity",
]
DERIVED_FEATURES = [
    "user_recency_days",
    "item_recency_days",
    "item_age_days",
    "co_purchase_rank",
    "embedding_rank",
]
FEATURES = [*SOURCES, *(f"is_{s}" for s in SOURCES), *FEAST_FEATURES, *DERIVED_FEATURES]


def with_features(settings: Settings, candidates: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Candidates joined point-in-time (as of `as_of`) with ranking_v1, plus derived features."""
    entity_df = candidates[["user_id", "item_id"]].assign(event_timestamp=as_of)
    joined = feature_store.historical(settings, entity_df, RANKING_SERVICE)
    joined = joined.drop(columns=["event_timestamp"]).drop_duplicates(["user_id", "item_id"])
    frame = candidates.merge(joined, on=["user_id", "item_id"], how="left")
    now = as_of.timestamp()
    frame["user_recency_days"] = (now - frame["last_purchase_at"].astype(float)) / 86400
    frame["item_recency_days"] = (now - frame["last_bought_at"].astype(float)) / 86400
    frame["item_age_days"] = (now - frame["first_bought_at"].astype(float)) / 86400
    for source in SOURCES:
        frame[f"is_{source}"] = (frame[source] > 0).astype(np.int8)
    frame["co_purchase_rank"] = _rank_within_user(frame, "co_purchase")
    frame["embedding_rank"] = _rank_within_user(frame, "embedding")
    return frame


def _rank_within_user(frame: pd.DataFrame, column: str) -> pd.Series:
    ranks = frame.groupby("user_id")[column].rank(ascending=False, method="first")
    return ranks.where(frame[column] > 0)


def labels(candidates: pd.DataFrame, purchases: pd.DataFrame) -> np.ndarray:
    """1 where the user bought the candidate item in the label window."""
    bought = set(zip(purchases["user_id"], purchases["item_id"], strict=True))
    pairs = zip(candidates["user_id"], candidates["item_id"], strict=True)
    return np.fromiter((pair in bought for pair in pairs), dtype=np.int8, count=len(candidates))


@dataclass
class Ranker:
    """A LightGBM model over FEATURES (binary or lambdarank objective)."""

    objective: str = "binary"
    seed: int = 13
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    rounds: int = 300
    threads: int = 2
    model: lgb.Booster | None = None
    stats: dict = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ranker:
        return cls(
            objective=settings.ranker_objective,
            seed=settings.seed,
            learning_rate=settings.ranker_learning_rate,
            num_leaves=settings.ranker_num_leaves,
            min_data_in_leaf=settings.ranker_min_data_in_leaf,
            rounds=settings.ranker_rounds,
            threads=settings.threads,
        )

    def fit(self, frame: pd.DataFrame, label: np.ndarray) -> Ranker:
        frame = frame.assign(_label=label)
        # Only users with at least one positive teach the ranker anything about order.
        useful = frame.groupby("user_id")["_label"].transform("max") > 0
        train = frame[useful].sort_values("user_id", kind="stable")
        if train.empty:
            raise ValueError("no candidate was bought in the label window: widen label_window_days")
        groups = train.groupby("user_id", sort=False).size().to_numpy()
        dataset = lgb.Dataset(
            train[FEATURES].astype(float),
            label=train["_label"],
            group=groups if self.objective == "lambdarank" else None,
        )
        params = {
            "objective": self.objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": self.seed,
            "deterministic": True,
            "num_threads": self.threads,
            "verbose": -1,
        }
        self.model = lgb.train(params, dataset, num_boost_round=self.rounds)
        self.stats = {
            "train_users": int(len(groups)),
            "train_rows": int(len(train)),
            "positives": int(train["_label"].sum()),
        }
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        assert self.model is not None, "fit the ranker first"
        return self.model.predict(frame[FEATURES].astype(float), num_threads=self.threads)

    def importances(self) -> dict[str, float]:
        """Share of total split gain per feature, largest first."""
        assert self.model is not None
        gain = self.model.feature_importance(importance_type="gain")
        total = gain.sum() or 1.0
        pairs = sorted(zip(FEATURES, gain / total, strict=True), key=lambda p: -p[1])
        return {name: round(float(share), 4) for name, share in pairs}

    def save(self, path: Path) -> None:
        assert self.model is not None
        self.model.save_model(str(path))


def top_n(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n best candidates per user as (user_id, item_id, rank, score, source)."""
    ordered = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    ordered["rank"] = ordered.groupby("user_id").cumcount() + 1
    best = ordered[ordered["rank"] <= n]
    return best[["user_id", "item_id", "rank", "score", "source"]].reset_index(drop=True)
