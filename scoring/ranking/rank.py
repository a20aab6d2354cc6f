"""Rank candidates with a learned ranker over the model score and Feast's ranking_v1 features.

LightGBM, trained on labels from a window before the scoring time: candidates are generated
as of `label_start` from what was known then (Feast point-in-time features, purchases before it), and
an item is a positive when the user bought it in [label_start, as_of). The same features, computed as
of the scoring time, then rank the live candidates.

Two objectives: `binary` estimates P(bought) for every candidate alike, so the order among items the
user never bought is learned as well as the order among repeats (what the novel-items metric reads);
`lambdarank` optimises the top of each user's whole list. With `ranker_split_repeat` (binary only), one
model learns the items a user bought before and another the items they never bought: the two behaviours
(reordering, discovering) read different features, and each model's P(bought) stays calibrated on its
own rows, so one list can still sort them together.

A deterministic share of the label window's users (`holdout_share`, by a hash of the id) is kept out of
training: the ranker's AUC and NDCG are measured on them, and the publish gate compares runs on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from retrieval import ordering
from retrieval.candidates import MODEL_SCORES, SOURCES
from scoring.evaluation import metrics
from scoring.features import feature_store
from scoring.settings import Settings
from scoring.training.holdout import held_out

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
    "item_interval_days",
    "item_due_ratio",
    "user_order_gap_days",
    "user_due_ratio",
    "co_purchase_rank",
    "embedding_rank",
    "ease_rank",
    "tifu_rank",
]
FEATURES = [*SOURCES, *(f"is_{s}" for s in SOURCES), *MODEL_SCORES, *FEAST_FEATURES, *DERIVED_FEATURES]


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
    # Repeat-purchase timing: how often the user rebuys this item and the shop, and how overdue each is.
    times = frame["times_bought"].astype(float)
    frame["item_interval_days"] = (frame["item_age_days"] - frame["item_recency_days"]) / (times - 1).where(
        times > 1
    )
    frame["item_due_ratio"] = frame["item_recency_days"] / frame["item_interval_days"].where(
        frame["item_interval_days"] > 0
    )
    orders = frame["orders_count"].astype(float)
    frame["user_order_gap_days"] = frame["tenure_days"].astype(float) / (orders - 1).where(orders > 1)
    frame["user_due_ratio"] = frame["user_recency_days"] / frame["user_order_gap_days"].where(
        frame["user_order_gap_days"] > 0
    )
    for source in SOURCES:
        frame[f"is_{source}"] = (frame[source] > 0).astype(np.int8)
    for source in ("co_purchase", "embedding", "ease", "tifu"):
        frame[f"{source}_rank"] = _rank_within_user(frame, source)
    return frame


def _rank_within_user(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each candidate's place (1 = best) by a source's score among its user's candidates, in the order
    every list uses (retrieval/ordering.py), so a tie ranks the same whatever order the rows came in
    (a Spark shard's shuffle); NaN where the source did not propose it."""
    best_first = ordering.ordered(frame[["user_id", "item_id", column]], by="user_id", score=column)
    ranks = (best_first.groupby("user_id").cumcount() + 1).reindex(frame.index).astype(float)
    return ranks.where(frame[column] > 0)


def feature_matrix(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """What both of Aisle's rankers learn from and score: the features as floats, rounded to the
    precision lists compare scores at (retrieval/ordering.py). A feature's last float32 digits are noise
    (a vector encoded in another batch, a sum taken in another order); rounded off, they can move neither
    a split threshold nor a prediction, so two processes train the same trees."""
    return frame[features].astype(float).round(ordering.SCORE_DECIMALS)


def lightgbm_params(
    objective: str, learning_rate: float, num_leaves: int, min_data_in_leaf: int, seed: int, threads: int
) -> dict:
    """LightGBM's parameters for both of Aisle's rankers (recommendations here, search in search_rank.py):
    the tuned knobs, plus the same row and feature subsampling and a fixed seed in deterministic mode,
    so a rerun of a stage on the same rows trains the same trees."""
    return {
        "objective": objective,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "deterministic": True,
        "num_threads": threads,
        "verbose": -1,
    }


def holdout_ndcg(holdout: pd.DataFrame, truth: pd.DataFrame, column: str, k: int) -> float:
    """Mean NDCG@k over the held-out users with a purchase in the window, ranking their candidates by
    `column` (items bought but never proposed count as misses)."""
    bought = truth.groupby("user_id")["item_id"].agg(set)
    lists = ordering.ordered(holdout, by="user_id", score=column).groupby("user_id")["item_id"].agg(list)
    values = [metrics.ndcg_at_k(items, lists.get(user, []), k) for user, items in bought.items()]
    return float(np.mean(values)) if values else float("nan")


def labels(candidates: pd.DataFrame, purchases: pd.DataFrame) -> np.ndarray:
    """1 where the user bought the candidate item in the label window."""
    bought = set(zip(purchases["user_id"], purchases["item_id"], strict=True))
    pairs = zip(candidates["user_id"], candidates["item_id"], strict=True)
    return np.fromiter((pair in bought for pair in pairs), dtype=np.int8, count=len(candidates))


SEGMENTS = ("repeat", "new")


def segment(frame: pd.DataFrame) -> np.ndarray:
    """'repeat' for items the user bought before (the repeat source proposes every one), else 'new'."""
    return np.where(frame["repeat"].to_numpy() > 0, "repeat", "new")


@dataclass
class Ranker:
    """LightGBM over FEATURES (binary or lambdarank objective): one model, or with `split_repeat` one per
    segment (items the user bought before, items they never bought)."""

    objective: str = "binary"
    seed: int = 13
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    rounds: int = 1000
    early_stopping: int = 50
    validation_share: float = 0.2
    ndcg_at: int = 20
    threads: int = 2
    split_repeat: bool = False
    models: dict[str, lgb.Booster] = field(default_factory=dict)
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
            early_stopping=settings.ranker_early_stopping,
            validation_share=settings.ranker_validation_share,
            ndcg_at=settings.top_n,
            threads=settings.threads,
            split_repeat=settings.ranker_split_repeat and settings.ranker_objective == "binary",
        )

    def fit(self, frame: pd.DataFrame, label: np.ndarray) -> Ranker:
        frame = frame.assign(_label=label)
        parts = {"all": frame}
        if self.split_repeat:
            by_segment = {name: frame[segment(frame) == name] for name in SEGMENTS}
            # A segment without a single purchase teaches nothing: then one model learns every row.
            if all(part["_label"].any() for part in by_segment.values()):
                parts = by_segment
        self.models, self.stats = {}, {}
        for name, part in parts.items():
            self.models[name], self.stats[name] = self._fit_one(part)
        return self

    def _fit_one(self, frame: pd.DataFrame) -> tuple[lgb.Booster, dict]:
        # Only users with at least one positive teach the ranker anything about order.
        useful = frame.groupby("user_id")["_label"].transform("max") > 0
        # One total order (bagging samples rows by position): the rows' order upstream never matters.
        train = frame[useful].sort_values(["user_id", "item_id"], kind="stable")
        if train.empty:
            raise ValueError("no candidate was bought in the label window: widen label_window_days")
        params = lightgbm_params(
            self.objective,
            self.learning_rate,
            self.num_leaves,
            self.min_data_in_leaf,
            self.seed,
            self.threads,
        )
        rounds = self._rounds(train, params)
        model = lgb.train(params, self._dataset(train), num_boost_round=rounds)
        stats = {
            "train_users": int(train["user_id"].nunique()),
            "train_rows": int(len(train)),
            "positives": int(train["_label"].sum()),
            "rounds": rounds,
        }
        return model, stats

    def _dataset(self, train: pd.DataFrame, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        """Rows sorted by user; lambdarank's groups are the users."""
        groups = train.groupby("user_id", sort=False).size().to_numpy()
        return lgb.Dataset(
            feature_matrix(train, FEATURES),
            label=train["_label"],
            group=groups if self.objective == "lambdarank" else None,
            reference=reference,
        )

    def _rounds(self, train: pd.DataFrame, params: dict) -> int:
        """How many boosting rounds the ranker gets: with early stopping, the round after which a stable
        share of the training users (`validation_share`, by hash) stopped improving for `early_stopping`
        rounds, on a fit of the others (binary log loss, or NDCG for lambdarank), at most `rounds`. A small
        shop's ranker overfits in a few dozen rounds and a large one's still learns after hundreds, so
        the rounds are chosen on the shop's own data; the ranker is then fitted on every training user."""
        if self.early_stopping <= 0:
            return self.rounds
        valid = held_out("validation " + train["user_id"].astype(str), self.validation_share)
        if not valid.any() or valid.all() or not train.loc[valid, "_label"].any():
            return self.rounds
        inner = self._dataset(train[~valid])
        metric = (
            {"metric": "binary_logloss"}
            if self.objective == "binary"
            else {"metric": "ndcg", "eval_at": [self.ndcg_at]}
        )
        probe = lgb.train(
            {**params, **metric},
            inner,
            num_boost_round=self.rounds,
            valid_sets=[self._dataset(train[valid], reference=inner)],
            callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
        )
        return int(probe.best_iteration or self.rounds)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        assert self.models, "fit or load the ranker first"
        if "all" in self.models:
            return self._predict_one(self.models["all"], frame)
        out = np.empty(len(frame))
        segments = segment(frame)
        for name, model in self.models.items():
            rows = segments == name
            if rows.any():
                out[rows] = self._predict_one(model, frame[rows])
        return out

    def _predict_one(self, model: lgb.Booster, frame: pd.DataFrame) -> np.ndarray:
        return model.predict(feature_matrix(frame, model.feature_name()), num_threads=self.threads)

    def feature_names(self) -> list[str]:
        """The features the models read (what a frame must hold to be scored)."""
        return sorted({name for model in self.models.values() for name in model.feature_name()})

    def importances(self) -> dict[str, float]:
        """Share of total split gain per feature, largest first, summed over the models."""
        gain = pd.Series(0.0, index=FEATURES)
        for model in self.models.values():
            gain = gain.add(
                pd.Series(model.feature_importance("gain"), index=model.feature_name()), fill_value=0
            )
        gain = gain / (gain.sum() or 1.0)
        return {name: round(float(share), 4) for name, share in gain.sort_values(ascending=False).items()}

    def save(self, folder: Path) -> None:
        """One LightGBM text file per model: ranker.txt (one model) or ranker_<segment>.txt; a rerun's
        leftovers of the other layout, and a peer that stood in for an earlier fit, are removed."""
        for stale in [*folder.glob("ranker*.txt"), folder / PEER_FILE]:
            stale.unlink(missing_ok=True)
        for name, model in self.models.items():
            model.save_model(str(folder / ("ranker.txt" if name == "all" else f"ranker_{name}.txt")))

    @classmethod
    def load(cls, folder: Path, threads: int = 2) -> Ranker:
        """The ranker a run folder saved (FileNotFoundError when it holds none)."""
        models = {"all": folder / "ranker.txt"} | {name: folder / f"ranker_{name}.txt" for name in SEGMENTS}
        found = {name: lgb.Booster(model_file=str(path)) for name, path in models.items() if path.exists()}
        if not found:
            raise FileNotFoundError(folder / "ranker.txt")
        if "all" in found and len(found) > 1:
            found.pop("all")
        return cls(threads=threads, split_repeat="all" not in found, models=found)


# The simple peers the publish gate holds the ranker to, each a score over a candidate's features:
# repurchase (time-decayed, popularity breaking ties) and popularity. EASE and TIFU-KNN are the ranker's
# own inputs, compared in `make evaluate`.
PEERS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "decayed_repurchase": lambda frame: frame["repeat"] + 1e-3 * frame["popular"],
    "popular": lambda frame: frame["popular"],
}
PEER_FILE = "ranker_peer.json"


@dataclass(frozen=True)
class PeerRanker:
    """A simple peer standing in for a run's learned ranker, which lost to it on the gate's holdout
    (scoring/pipeline/gate.py): the run publishes the peer's order, and `make update` and the next
    night's gate read the run's ranking through `load`, as for any run."""

    peer: str

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return PEERS[self.peer](frame).to_numpy(dtype=float)

    def save(self, folder: Path) -> None:
        (folder / PEER_FILE).write_text(json.dumps({"peer": self.peer}))


def load(folder: Path, threads: int = 2) -> Ranker | PeerRanker:
    """What ranks a run's candidates: the peer that stood in for its ranker, else its LightGBM ranker
    (FileNotFoundError when the folder holds neither)."""
    if (folder / PEER_FILE).exists():
        return PeerRanker(json.loads((folder / PEER_FILE).read_text())["peer"])
    return Ranker.load(folder, threads)
