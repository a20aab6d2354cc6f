"""The learned search ranker: LightGBM lambdarank over hybrid candidates, graded labels, one group per query.

Why lambdarank with graded labels: search quality is read at the top of one query's list (NDCG@10), and
shoppers' actions are graded (a purchase says more than a click), so the objective is the metric itself,
per query. Labels are non-negative gains; they are turned into integer levels (`resolution` levels per
unit of gain) and LightGBM's label_gain is set to level / resolution, so the DCG the ranker optimises has
exactly the gains the caller gave (linear in the grade, as the evaluation's NDCG), not LightGBM's
default 2^level - 1.

Why a generic feature builder: the demo pipeline passes the Feast frames of search_ranking_v1 (query,
query x item and item search statistics, user features), the Home Depot evaluation only what its log
gives. `search_features` takes whatever frames it is handed and always returns the same columns (a
missing group is NaN, which LightGBM routes as "unknown"), so one model file knows its feature list and
serving never guesses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from retrieval.lexical import stems, words
from scoring.ranking.rank import feature_matrix, lightgbm_params

MODEL_FILE = "search_ranker.txt"
META_FILE = "search_ranker.json"

RETRIEVAL_FEATURES = [
    "lexical_score",
    "dense_score",
    "lexical_rank",
    "dense_rank",
    "fused_score",
    "lexical_score_share",  # score over the query's best BM25 score: how close to the best match
    "dense_score_gap",  # the query's best cosine minus this one
    "in_both",
    "query_words",
]
TEXT_FEATURES = ["query_coverage", "query_bigram_coverage", "query_numbers_matched", "item_title_words"]
QUERY_FEATURES = ["query_searches", "query_click_through_rate", "query_zero_click_rate"]
QUERY_ITEM_FEATURES = [
    "query_item_clicks",
    "query_item_carts",
    "query_item_purchases",
    "query_item_click_share",
]
ITEM_SEARCH_FEATURES = ["item_search_clicks", "item_search_carts", "item_search_purchases"]
ITEM_FEATURES = ["item_popularity", "price", "price_to_query_median"]
USER_FEATURES = ["user_category_affinity", "user_bought_item"]
FEATURES = [
    *RETRIEVAL_FEATURES,
    *TEXT_FEATURES,
    *QUERY_FEATURES,
    *QUERY_ITEM_FEATURES,
    *ITEM_SEARCH_FEATURES,
    *ITEM_FEATURES,
    *USER_FEATURES,
]
NON_PERSONAL_FEATURES = [f for f in FEATURES if f not in USER_FEATURES]


def _left(frame: pd.DataFrame, other: pd.DataFrame | None, keys: list[str], columns: dict[str, str]):
    """`frame` with `columns` (source -> feature name) of `other` joined on `keys`; NaN where absent."""
    if other is None or other.empty:
        return frame.assign(**{name: np.nan for name in columns.values()})
    present = {s: n for s, n in columns.items() if s in other.columns}
    picked = other[keys + list(present)].drop_duplicates(keys, keep="last").rename(columns=present)
    for key in keys:
        picked[key] = picked[key].astype(frame[key].dtype)
    out = frame.merge(picked, on=keys, how="left")
    for name in columns.values():
        if name not in out:
            out[name] = np.nan
    return out


def text_match(queries: pd.Series, texts: pd.Series) -> pd.DataFrame:
    """Word-overlap features of each (query, item text) pair, NaN where the item has no text:
    query_coverage (share of the query's distinct stems in the text), query_bigram_coverage (share of its
    adjacent stem pairs found adjacent in the text: "wall paneling" is more than "wall" and "paneling"),
    query_numbers_matched (share of its words with a digit, sizes and model numbers, found verbatim) and
    item_title_words (the text's length in words: a long title matches anything a little)."""
    cache: dict[str, tuple] = {}

    def parsed(text: str) -> tuple:
        found = cache.get(text)
        if found is None:
            tokens = words(text)
            stemmed = stems(tokens)
            found = cache[text] = (
                frozenset(stemmed),
                frozenset(zip(stemmed, stemmed[1:], strict=False)),
                frozenset(t for t in tokens if any(c.isdigit() for c in t)),
                len(tokens),
            )
        return found

    out = np.full((len(queries), len(TEXT_FEATURES)), np.nan)
    for i, (query, text) in enumerate(zip(queries, texts, strict=True)):
        if not isinstance(text, str):
            continue
        q_stems, q_bigrams, q_numbers, _ = parsed(query)
        t_stems, t_bigrams, t_numbers, t_words = parsed(text)
        out[i, 0] = len(q_stems & t_stems) / len(q_stems) if q_stems else 0.0
        out[i, 1] = len(q_bigrams & t_bigrams) / len(q_bigrams) if q_bigrams else np.nan
        out[i, 2] = len(q_numbers & t_numbers) / len(q_numbers) if q_numbers else np.nan
        out[i, 3] = t_words
    return pd.DataFrame(out, columns=TEXT_FEATURES, index=queries.index)


def search_features(
    candidates: pd.DataFrame,
    items: pd.DataFrame | None = None,
    query_stats: pd.DataFrame | None = None,
    query_item_stats: pd.DataFrame | None = None,
    item_search_stats: pd.DataFrame | None = None,
    user_category_affinity: pd.DataFrame | None = None,
    user_purchases: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The candidates with every column of FEATURES.

    candidates: query (normalised), item_id, the hybrid retriever's columns, user_id when personalised,
      and optionally corrected_query (the typo-corrected words) for the word-overlap feature.
    items: item_id, with any of text (for query_coverage), category, price, popularity.
    query_stats: query, searches, click_through_rate, zero_click_rate (fct_query_stats).
    query_item_stats: query, item_id, clicks, carts, purchases, click_share (fct_query_item_stats).
    item_search_stats: item_id, search_clicks, search_carts, search_purchases (fct_item_search_stats).
    user_category_affinity: user_id, category, affinity (share of the user's purchases in the category).
    user_purchases: user_id, item_id of items the user bought before.
    """
    frame = candidates.copy()
    frame["item_id"] = frame["item_id"].astype(str)
    by_query = frame.groupby("query", sort=False)
    best_lexical = by_query["lexical_score"].transform("max")
    frame["lexical_score_share"] = np.where(best_lexical > 0, frame["lexical_score"] / best_lexical, 0.0)
    frame["dense_score_gap"] = by_query["dense_score"].transform("max") - frame["dense_score"]
    frame["in_both"] = (frame["lexical_rank"].notna() & frame["dense_rank"].notna()).astype(float)
    frame["query_words"] = frame["query"].map(lambda q: len(words(q))).astype(float)

    if items is not None:
        items = items.assign(item_id=items["item_id"].astype(str))
        catalogue = items.drop_duplicates("item_id").set_index("item_id")
    else:
        catalogue = pd.DataFrame(index=pd.Index([], name="item_id"))
    column = {
        name: (catalogue[name].reindex(frame["item_id"]).to_numpy() if name in catalogue else None)
        for name in ("text", "category", "price", "popularity")
    }
    # Word overlap reads the query as the lexical index scored it (typo-corrected) where the caller says so.
    text_query = frame["corrected_query"] if "corrected_query" in frame else frame["query"]
    if column["text"] is not None:
        matched = text_match(text_query.reset_index(drop=True), pd.Series(column["text"]))
        frame[TEXT_FEATURES] = matched.to_numpy()
    else:
        frame[TEXT_FEATURES] = np.nan
    frame["item_popularity"] = column["popularity"] if column["popularity"] is not None else np.nan
    frame["price"] = (
        pd.to_numeric(column["price"], errors="coerce") if column["price"] is not None else np.nan
    )
    median_price = frame.groupby("query", sort=False)["price"].transform("median")
    frame["price_to_query_median"] = frame["price"] / median_price.where(median_price > 0)

    frame = _left(
        frame,
        query_stats,
        ["query"],
        {
            "searches": "query_searches",
            "click_through_rate": "query_click_through_rate",
            "zero_click_rate": "query_zero_click_rate",
        },
    )
    frame = _left(
        frame,
        query_item_stats,
        ["query", "item_id"],
        {
            "clicks": "query_item_clicks",
            "carts": "query_item_carts",
            "purchases": "query_item_purchases",
            "click_share": "query_item_click_share",
        },
    )
    if item_search_stats is not None:
        item_search_stats = item_search_stats.assign(item_id=item_search_stats["item_id"].astype(str))
    frame = _left(
        frame,
        item_search_stats,
        ["item_id"],
        {c: f"item_{c}" for c in ("search_clicks", "search_carts", "search_purchases")},
    )
    # A query x item or item statistic that is absent means "never happened" once a log was given.
    for group, given in ((QUERY_ITEM_FEATURES, query_item_stats), (ITEM_SEARCH_FEATURES, item_search_stats)):
        if given is not None:
            frame[group] = frame[group].fillna(0.0)

    frame["user_category_affinity"] = np.nan
    frame["user_bought_item"] = np.nan
    if "user_id" in frame and user_category_affinity is not None and column["category"] is not None:
        affinity = user_category_affinity.assign(
            user_id=user_category_affinity["user_id"].astype(str),
            category=user_category_affinity["category"].astype(str),
        )
        keys = pd.DataFrame(
            {"user_id": frame["user_id"].astype(str), "category": pd.Series(column["category"])}
        )
        joined = keys.merge(affinity, on=["user_id", "category"], how="left")["affinity"]
        known = frame["user_id"].notna() & (frame["user_id"].astype(str) != "")
        frame["user_category_affinity"] = np.where(known, joined.fillna(0.0).to_numpy(), np.nan)
    if "user_id" in frame and user_purchases is not None:
        bought = set(
            zip(user_purchases["user_id"].astype(str), user_purchases["item_id"].astype(str), strict=True)
        )
        known = frame["user_id"].notna() & (frame["user_id"].astype(str) != "")
        pairs = zip(frame["user_id"].astype(str), frame["item_id"], strict=True)
        flags = np.fromiter((p in bought for p in pairs), dtype=float, count=len(frame))
        frame["user_bought_item"] = np.where(known, flags, np.nan)
    return frame


def gain_levels(gains: np.ndarray, resolution: int) -> np.ndarray:
    """Non-negative gains as the integer relevance levels lambdarank needs."""
    gains = np.asarray(gains, dtype=float)
    if np.any(gains < 0) or np.any(~np.isfinite(gains)):
        raise ValueError("search labels must be finite, non-negative gains")
    return np.rint(gains * resolution).astype(int)


@dataclass
class SearchRanker:
    """LightGBM lambdarank over FEATURES (or NON_PERSONAL_FEATURES without user features)."""

    personalised: bool = False
    resolution: int = 3
    seed: int = 13
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    rounds: int = 300
    threads: int = 2
    features: list[str] = field(default_factory=list)
    model: lgb.Booster | None = None
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            self.features = list(FEATURES if self.personalised else NON_PERSONAL_FEATURES)

    @classmethod
    def from_settings(cls, settings, personalised: bool = False) -> SearchRanker:
        return cls(
            personalised=personalised,
            seed=settings.seed,
            learning_rate=settings.search_ranker_learning_rate,
            num_leaves=settings.search_ranker_num_leaves,
            min_data_in_leaf=settings.search_ranker_min_data_in_leaf,
            rounds=settings.search_ranker_rounds,
            threads=settings.threads,
        )

    def params(self, top_gain: int) -> dict:
        return {
            **lightgbm_params(
                "lambdarank",
                self.learning_rate,
                self.num_leaves,
                self.min_data_in_leaf,
                self.seed,
                self.threads,
            ),
            "metric": "ndcg",
            "eval_at": [10],
            "label_gain": [i / self.resolution for i in range(top_gain + 1)],
        }

    def fit(self, frame: pd.DataFrame, gains: np.ndarray, group: str = "query") -> SearchRanker:
        """Learn from candidate rows with their gains (0 = not relevant), grouped by the `group` column;
        queries without any positive gain teach no order and are left out."""
        levels = gain_levels(gains, self.resolution)
        frame = frame.assign(_level=levels)
        useful = frame.groupby(group, sort=False)["_level"].transform("max") > 0
        # One total order (bagging samples rows by position): the rows' order upstream never matters.
        train = frame[useful].sort_values([group, "item_id"], kind="stable")
        if train.empty:
            raise ValueError("no query has a relevant candidate: nothing to learn an order from")
        sizes = train.groupby(group, sort=False).size().to_numpy()
        dataset = lgb.Dataset(feature_matrix(train, self.features), label=train["_level"], group=sizes)
        self.model = lgb.train(self.params(int(train["_level"].max())), dataset, num_boost_round=self.rounds)
        self.stats = {
            "train_queries": int(len(sizes)),
            "train_rows": int(len(train)),
            "relevant_rows": int((train["_level"] > 0).sum()),
        }
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit or load the search ranker first")
        return self.model.predict(feature_matrix(frame, self.features), num_threads=self.threads)

    def importances(self) -> dict[str, float]:
        """Share of total split gain per feature, largest first."""
        if self.model is None:
            raise RuntimeError("fit or load the search ranker first")
        gain = self.model.feature_importance(importance_type="gain")
        total = gain.sum() or 1.0
        pairs = sorted(zip(self.features, gain / total, strict=True), key=lambda p: -p[1])
        return {name: round(float(share), 4) for name, share in pairs}

    def save(self, directory: Path) -> Path:
        """search_ranker.txt (the booster) and search_ranker.json (features, personalised, parameters)."""
        if self.model is None:
            raise RuntimeError("fit the search ranker before saving it")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_model(str(directory / MODEL_FILE))
        meta = {
            "features": self.features,
            "personalised": self.personalised,
            "resolution": self.resolution,
            "seed": self.seed,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "rounds": self.rounds,
            "threads": self.threads,
            "stats": self.stats,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> SearchRanker:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        model = lgb.Booster(model_file=str(directory / MODEL_FILE))
        return cls(**meta, model=model)
