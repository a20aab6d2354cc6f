"""scoring/ranking/search_rank.py: features assembled from frames, and a real LightGBM lambdarank that
learns a planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.evaluation.metrics import graded_ndcg_at_k
from scoring.ranking.search_rank import (
    FEATURES,
    NON_PERSONAL_FEATURES,
    TEXT_FEATURES,
    USER_FEATURES,
    SearchRanker,
    gain_levels,
    search_features,
    text_match,
)


def candidates(queries: int, per_query: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = queries * per_query
    frame = pd.DataFrame(
        {
            "query": np.repeat([f"q{seed}_{i}" for i in range(queries)], per_query),
            "user_id": np.repeat([f"u{i % 7}" for i in range(queries)], per_query),
            "item_id": [f"i{j}" for j in rng.integers(0, 200, size=n)],
            "lexical_score": rng.exponential(2.0, size=n),
            "dense_score": rng.uniform(0, 1, size=n),
        }
    )
    frame = frame.drop_duplicates(["query", "item_id"]).reset_index(drop=True)
    frame["lexical_rank"] = frame.groupby("query")["lexical_score"].rank(ascending=False)
    frame["dense_rank"] = frame.groupby("query")["dense_score"].rank(ascending=False)
    frame["fused_score"] = 1 / (60 + frame["lexical_rank"]) + 1 / (60 + frame["dense_rank"])
    return frame


def planted_gain(frame: pd.DataFrame) -> np.ndarray:
    """Relevance lives in the dense score and in whether the shopper bought the item before."""
    return np.clip(3 * (frame["dense_score"] > 0.8) + 2 * frame["user_bought_item"].fillna(0), 0, 3)


def user_purchases(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    picked = frame.sample(frac=0.15, random_state=seed)
    return picked[["user_id", "item_id"]]


def mean_ndcg(frame: pd.DataFrame, score: np.ndarray, gain: np.ndarray) -> float:
    frame = frame.assign(_score=score, _gain=gain)
    values = []
    for _, group in frame.groupby("query"):
        ranked = group.sort_values("_score", ascending=False)
        gains = dict(zip(group["item_id"], group["_gain"], strict=True))
        if max(gains.values()) > 0:
            values.append(graded_ndcg_at_k(gains, ranked["item_id"].tolist(), 10))
    return float(np.mean(values))


def test_features_join_every_frame_and_keep_one_row_per_candidate():
    cands = pd.DataFrame(
        {
            "query": ["drill", "drill", "lamp"],
            "user_id": ["u1", "u1", ""],
            "item_id": ["a", "b", "a"],
            "lexical_score": [4.0, 2.0, 0.0],
            "dense_score": [0.9, 0.5, 0.7],
            "lexical_rank": [1.0, 2.0, np.nan],
            "dense_rank": [1.0, 2.0, 1.0],
            "fused_score": [2 / 61, 1 / 62 + 1 / 62, 1 / 61],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "text": ["Cordless Drill Kit", "Desk Lamp"],
            "category": ["tools", "lighting"],
            "price": [100.0, 20.0],
            "popularity": [50, 5],
        }
    )
    out = search_features(
        cands,
        items=items,
        query_stats=pd.DataFrame({"query": ["drill"], "searches": [10], "click_through_rate": [0.5]}),
        query_item_stats=pd.DataFrame(
            {"query": ["drill"], "item_id": ["a"], "clicks": [3], "click_share": [0.6]}
        ),
        item_search_stats=pd.DataFrame({"item_id": ["b"], "search_clicks": [7]}),
        user_category_affinity=pd.DataFrame({"user_id": ["u1"], "category": ["tools"], "affinity": [0.8]}),
        user_purchases=pd.DataFrame({"user_id": ["u1"], "item_id": ["b"]}),
    )
    assert len(out) == 3 and set(FEATURES) <= set(out.columns)
    row = out.set_index(["query", "item_id"])
    assert row.loc[("drill", "a"), "lexical_score_share"] == 1.0
    assert row.loc[("drill", "b"), "lexical_score_share"] == 0.5
    assert row.loc[("drill", "b"), "dense_score_gap"] == pytest.approx(0.4)
    assert row.loc[("drill", "a"), "in_both"] == 1 and row.loc[("lamp", "a"), "in_both"] == 0
    assert (
        row.loc[("drill", "a"), "query_coverage"] == 1.0 and row.loc[("lamp", "a"), "query_coverage"] == 0.0
    )
    assert row.loc[("drill", "a"), "query_searches"] == 10 and np.isnan(
        row.loc[("lamp", "a"), "query_searches"]
    )
    assert np.isnan(row.loc[("drill", "a"), "query_zero_click_rate"])  # a column the frame lacks
    assert row.loc[("drill", "a"), "query_item_clicks"] == 3
    assert row.loc[("drill", "b"), "query_item_clicks"] == 0  # a log was given: absent means none
    assert (
        row.loc[("drill", "b"), "item_search_clicks"] == 7
        and row.loc[("drill", "a"), "item_search_clicks"] == 0
    )
    assert row.loc[("drill", "a"), "price_to_query_median"] == pytest.approx(100 / 60)
    assert row.loc[("drill", "a"), "user_category_affinity"] == 0.8
    assert row.loc[("drill", "b"), "user_category_affinity"] == 0.0
    assert (
        row.loc[("drill", "b"), "user_bought_item"] == 1 and row.loc[("drill", "a"), "user_bought_item"] == 0
    )
    assert np.isnan(row.loc[("lamp", "a"), "user_bought_item"])  # anonymous: unknown, not "no"


def test_text_match_features():
    out = text_match(
        pd.Series(["4x8 wall paneling", "paneling wall", "drill", "lamp"]),
        pd.Series(["4x8 Wall Paneling in Birch", "4x8 Wall Paneling in Birch", "Cordless Drills", None]),
    )
    assert list(out.columns) == TEXT_FEATURES
    assert out.loc[0].tolist() == [1.0, 1.0, 1.0, 5.0]  # "in" is a word of the title, not a stem
    assert out.loc[1, "query_coverage"] == 1.0 and out.loc[1, "query_bigram_coverage"] == 0.0  # order matters
    assert np.isnan(out.loc[1, "query_numbers_matched"])  # no number asked for
    assert out.loc[2, "query_coverage"] == 1.0  # drill ~ drills
    assert out.loc[3].isna().all()


def test_features_without_optional_frames_are_nan_not_missing():
    cands = candidates(3, 5, seed=1).drop(columns="user_id")
    out = search_features(cands)
    assert set(FEATURES) <= set(out.columns)
    assert out[USER_FEATURES + ["price", "query_item_clicks", "query_coverage"]].isna().all().all()


def test_gain_levels():
    np.testing.assert_array_equal(gain_levels(np.array([0, 1 / 3, 2 / 3, 1.0, 2.0]), 3), [0, 1, 2, 3, 6])
    with pytest.raises(ValueError):
        gain_levels(np.array([-1.0]), 3)


def test_ranker_learns_a_planted_signal_and_personalisation_pays(tmp_path):
    train = candidates(150, 30, seed=2)
    test = candidates(60, 30, seed=3)
    train = search_features(train, user_purchases=user_purchases(train, 0))
    test = search_features(test, user_purchases=user_purchases(test, 1))
    train_gain, test_gain = planted_gain(train), planted_gain(test)
    ranker = SearchRanker(personalised=True, rounds=60, min_data_in_leaf=5, threads=1).fit(train, train_gain)
    plain = SearchRanker(personalised=False, rounds=60, min_data_in_leaf=5, threads=1).fit(train, train_gain)
    assert set(USER_FEATURES) <= set(ranker.features) and not set(USER_FEATURES) & set(plain.features)
    assert plain.features == NON_PERSONAL_FEATURES
    learned = mean_ndcg(test, ranker.predict(test), test_gain)
    without_user = mean_ndcg(test, plain.predict(test), test_gain)
    fused = mean_ndcg(test, test["fused_score"].to_numpy(), test_gain)
    assert learned > 0.95, learned
    assert learned > without_user + 0.05 > fused
    importances = ranker.importances()
    assert set(list(importances)[:2]) == {"dense_score", "user_bought_item"} or list(importances)[0] in {
        "dense_score",
        "dense_score_gap",
        "dense_rank",
    }
    ranker.save(tmp_path)
    loaded = SearchRanker.load(tmp_path)
    assert loaded.personalised and loaded.features == ranker.features
    np.testing.assert_allclose(loaded.predict(test), ranker.predict(test))


def test_fitting_without_any_relevant_candidate_is_refused():
    frame = search_features(candidates(3, 5, seed=4))
    with pytest.raises(ValueError, match="no query has a relevant"):
        SearchRanker().fit(frame, np.zeros(len(frame)))
    with pytest.raises(RuntimeError):
        SearchRanker().predict(frame)
