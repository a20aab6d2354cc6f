"""The search evaluation: metric functions against hand-computed values, the Home Depot adapter's mapping and
split, and a quick evaluation on a slice of the real file (../shared; skipped with a message where absent)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scoring.evaluation import metrics
from scoring.evaluation.search import METRICS, paired_ratio, per_term, summarise
from scoring.ingest import home_depot

# ----- metrics --------------------------------------------------------------------------------------------


def test_graded_ndcg_by_hand():
    gains = {"a": 2.0, "b": 1.0, "c": 0.0}
    # ranked b, x (unjudged), a: DCG = 1/log2(2) + 0 + 2/log2(4) = 2; ideal a, b: 2 + 1/log2(3)
    assert metrics.graded_ndcg_at_k(gains, ["b", "x", "a"], 3) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert metrics.graded_ndcg_at_k(gains, ["a", "b"], 10) == pytest.approx(1.0)
    # the cut-off: a at rank 3 does not count at k = 2, and the ideal is cut at k too
    assert metrics.graded_ndcg_at_k(gains, ["b", "x", "a"], 2) == pytest.approx(1 / (2 + 1 / math.log2(3)))
    assert metrics.graded_ndcg_at_k(gains, [], 5) == 0.0
    assert math.isnan(metrics.graded_ndcg_at_k({"a": 0.0}, ["a"], 5))  # nothing relevant: no NDCG
    with pytest.raises(ValueError):
        metrics.graded_ndcg_at_k(gains, ["a"], 0)


def test_reciprocal_rank_and_recall_of_a_relevant_set_by_hand():
    assert metrics.reciprocal_rank_at_k({"c"}, ["a", "b", "c"], 10) == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank_at_k({"c"}, ["a", "b", "c"], 2) == 0.0
    assert metrics.recall_at_k({"a", "c", "d"}, ["a", "b", "c"], 2) == pytest.approx(1 / 3)
    assert metrics.recall_at_k({"a", "c", "d"}, ["a", "b", "c"], 100) == pytest.approx(2 / 3)


def test_per_term_leaves_out_terms_without_relevant_products():
    from scoring.evaluation.search import Judged

    judged = Judged(
        terms=["t1", "t2"],
        gains=[{"a": 2.0, "b": 0.0}, {"c": 0.0}],
        relevant=[{"a"}, set()],
        misspelled=np.array([True, False]),
    )
    values = per_term(judged, [["b", "a"], ["c"]])
    assert values.loc[0, "ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert values.loc[0, "mrr@10"] == pytest.approx(0.5) and values.loc[0, "recall@100"] == 1.0
    assert values.loc[1].isna().all()
    summary = summarise(values, judged.misspelled, seed=0, resamples=100)
    assert summary["terms"] == 1 and summary["misspelled"]["terms"] == 1 and summary["other"]["terms"] == 0
    assert summary["other"]["ndcg@10"] is None


def test_paired_ratio_is_exact_on_a_constant_ratio():
    a = np.array([0.2, 0.4, 0.6, np.nan])
    out = paired_ratio(a, a / 2, seed=0, resamples=200)
    assert out == {"value": 2.0, "ci_low": 2.0, "ci_high": 2.0}


# ----- the adapter ------------------------------------------------------------------------------------------


def test_grades_map_onto_actions():
    assert [home_depot.action_for(g) for g in (3.0, 2.75, 2.67, 2.5, 2.33, 2.0, 1.0)] == [
        "purchase",
        "cart",
        "cart",
        "click",
        "click",
        "none",
        "none",
    ]


def test_split_is_deterministic_and_case_blind():
    assert home_depot.normalise_term("  Toilet   SEAT ") == "toilet seat"
    assert home_depot.is_test_term("Toilet Seat", 0.2) == home_depot.is_test_term("toilet  seat", 0.2)
    terms = [f"term {i}" for i in range(5000)]
    share = np.mean([home_depot.is_test_term(t, 0.2) for t in terms])
    assert 0.18 < share < 0.22
    assert home_depot.hash_fraction("drill") == home_depot.hash_fraction("drill")
    # the second split is independent of the first: about its share of test and of training terms
    ranker = [t for t in terms if home_depot.part_of(t, 0.25)]
    assert 0.22 < len(ranker) / len(terms) < 0.28
    assert 0.15 < np.mean([home_depot.is_test_term(t, 0.2) for t in ranker]) < 0.25


def test_search_log_has_one_search_per_term_and_a_none_row_without_actions():
    judgments = pd.DataFrame(
        {
            "row_id": [1, 2, 3, 4, 5],
            "search_term": ["drill", "drill", "drill", "lamp shade", "lamp shade"],
            "item_id": ["10", "11", "12", "20", "21"],
            "title": ["a", "b", "c", "d", "e"],
            "grade": [3.0, 2.33, 1.67, 2.0, 1.0],
        }
    )
    log = home_depot.search_log(judgments)
    assert list(log.columns) == [
        "search_id",
        "user_id",
        "query",
        "searched_at",
        "item_id",
        "action",
        "position",
    ]
    drill = log[log["query"] == "drill"]
    assert dict(zip(drill["item_id"], drill["action"], strict=True)) == {"10": "purchase", "11": "click"}
    assert drill["search_id"].nunique() == 1
    lamp = log[log["query"] == "lamp shade"]
    assert len(lamp) == 1 and lamp.iloc[0]["action"] == "none" and lamp.iloc[0]["item_id"] == ""
    assert log.groupby("query")["searched_at"].nunique().eq(1).all()
    assert sorted(log["searched_at"].unique()) == ["2016-01-01 00:00:00", "2016-01-01 00:01:00"]
    assert (log["user_id"] == "").all()


# ----- the real file ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home_depot_zip():
    if not home_depot.HOME_DEPOT_ZIP.exists():
        pytest.skip(
            f"the Home Depot file is not at {home_depot.HOME_DEPOT_ZIP} (it lives in ../shared/datasets)"
        )
    return home_depot.HOME_DEPOT_ZIP


@pytest.mark.slow
def test_adapter_on_the_real_file(home_depot_zip, tmp_path):
    data = home_depot.load(home_depot_zip, test_share=0.2)
    summary = data.split_summary()
    # the figures of ../shared/datasets/README.md
    assert len(data.judgments) == 74_067 and summary["terms"] == 11_795 and summary["items"] == 54_667
    assert summary["test_judgments"] + summary["train_judgments"] == 74_067
    assert 0.18 < summary["test_terms"] / summary["terms"] < 0.22
    # no normalised term on both sides
    sides = data.judgments.groupby("term_key")["test"].nunique()
    assert (sides == 1).all()
    # every training term is one search in the log, no test term is
    assert set(data.searches["query"]) == set(data.train["search_term"])
    assert data.searches.groupby("query")["search_id"].nunique().eq(1).all()
    acted = data.train[data.train["grade"] >= 2.33 - 1e-9]
    assert (data.searches["action"] != "none").sum() == len(acted)
    # the same split on a second read
    again = home_depot.load(home_depot_zip, test_share=0.2)
    assert again.split_summary() == summary
    folder = home_depot.write_raw(data, tmp_path / "raw")
    assert len(pd.read_parquet(folder / "items.parquet")) == 54_667


@pytest.mark.slow
def test_quick_evaluation_on_a_slice_of_the_real_file(home_depot_zip, tmp_path):
    from scoring.evaluation.search import evaluate, evaluation_settings, table_frame
    from scoring.evaluation.search_plots import write_html
    from tests.conftest import tiny_settings

    settings = evaluation_settings(
        tiny_settings(
            tmp_path,
            search_evaluation_finetune_steps=4,
            search_evaluation_bootstrap=200,
            search_ranker_rounds=50,
            threads=1,
        )
    )
    # the governed route: adapter -> raw files -> dbt build +tag:search -> fct_searches and the items
    report = evaluate(
        settings, home_depot_zip, route="dbt", cache=tmp_path / "cache", max_terms=120, max_items=600
    )
    methods = report["methods"]
    assert {"bm25", "zero_shot_minilm", "rrf_bm25_zero_shot", "aisle"} <= set(methods)
    for result in methods.values():
        for metric in METRICS:
            value = result[metric]
            assert 0 <= value["ci_low"] <= value["value"] <= value["ci_high"] <= 1
    # every method finds something on a small catalogue, and the learned ranker's list is a real one
    assert methods["bm25"]["ndcg@10"]["value"] > 0.1
    assert methods["aisle"]["recall@100"]["value"] > 0.5
    assert report["split"]["misspelled_terms"] > 0
    assert report["split"]["training_log_route"].startswith("dbt warehouse")
    assert report["finetune"]["steps"] == 4
    json.dumps(report)
    page = write_html(report, table_frame(report), tmp_path / "search_evaluation.html")
    assert "Aisle search evaluation" in page.read_text()
    # the second run reads the zero-shot embeddings from the cache
    assert any((tmp_path / "cache").glob("items-*.npy"))
