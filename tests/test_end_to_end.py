"""The whole path on a tiny demo shop, every component real: generator, dbt, Feast stores, fine-tuning,
FAISS, ranking and publishing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from retrieval.candidates import SOURCES
from scoring.errors import AisleError
from scoring.features import feature_store
from scoring.pipeline import job, stages
from scoring.settings import ROOT
from scoring.warehouse import tables


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_active_user_gets_n_known_recommendations(scored_workspace) -> None:
    settings, _ = scored_workspace
    published = pd.read_parquet(settings.published_recommendations)
    assert list(published.columns) == [
        "user_id",
        "item_id",
        "rank",
        "score",
        "source",
        "list",
        "reason",
        "run_id",
    ]
    recs = published[published["list"] == "top"]
    active = tables.read(settings, "select distinct user_id from fct_user_histories")["user_id"]
    items = tables.read(settings, "select item_id from dim_items")["item_id"]
    counts = recs.groupby("user_id")["item_id"].nunique()
    assert set(counts.index) == set(active)
    assert (counts == min(settings.top_n, len(items))).all()
    assert set(recs["item_id"]) <= set(items)
    assert recs.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    assert set(recs["source"]) <= set(SOURCES)


def test_fine_tuning_loss_went_down_and_the_manifest_records_the_run(scored_workspace) -> None:
    settings, run_dir = scored_workspace
    manifest = json.loads((run_dir / "manifest.json").read_text())
    tune = manifest["stages"]["finetune"]
    assert tune["loss_last_quarter_mean"] < tune["loss_first_quarter_mean"]
    assert manifest["status"] == "succeeded"
    for stage in (
        "training_pairs",
        "finetune",
        "embed",
        "index",
        "candidates",
        "rank",
        "validate",
        "publish",
    ):
        assert manifest["stages"][stage]["seconds"] >= 0
    assert manifest["stages"]["training_pairs"]["pairs"] > 0
    assert (settings.runs_dir / "current").resolve() == run_dir.resolve()
    for name in (
        "pairs.parquet",
        "items.parquet",
        "item_embeddings.npy",
        "items.faiss",
        "candidates.parquet",
    ):
        assert (run_dir / name).exists(), name


def test_each_distinct_user_history_is_embedded_once_and_shared(scored_workspace) -> None:
    _, run_dir = scored_workspace
    embed = json.loads((run_dir / "manifest.json").read_text())["stages"]["embed"]
    now, then = (pd.read_parquet(run_dir / f"{name}.parquet") for name in ("users", "users_label"))
    assert embed["users_label_encoded"] == len(set(then["query"]) - set(now["query"]))
    # Fine-tuning's held-out measure encoded item texts with the run's model: the embed stage read them.
    assert 0 < embed["item_texts_cached"] <= embed["items"]
    vectors = {name: np.load(run_dir / f"{name}_embeddings.npy") for name in ("users", "users_label")}
    assert len(vectors["users"]) == len(now) and len(vectors["users_label"]) == len(then)
    # A shopper who bought nothing in the label window has one text at both times, and one vector.
    same = now.reset_index().merge(then.reset_index(), on=["user_id", "query"], suffixes=("_now", "_then"))
    assert len(same) > 0
    assert np.array_equal(vectors["users"][same["index_now"]], vectors["users_label"][same["index_then"]])


def test_training_pairs_never_see_the_purchase_they_predict(scored_workspace) -> None:
    settings, run_dir = scored_workspace
    pairs = pd.read_parquet(run_dir / "pairs.parquet")
    histories = pd.read_parquet(tables.mart_path(settings, "fct_user_histories"))
    # The history joined for each recommendation pair is the latest snapshot strictly before the purchase.
    sample = pairs[pairs["task"] == "recommend"].head(50)
    assert len(sample) > 0
    for row in sample.itertuples():
        before = histories[
            (histories.user_id == row.user_id) & (histories.event_timestamp <= row.event_timestamp)
        ]
        assert not before.empty
        assert row.item_id not in set(before.sort_values("event_timestamp").iloc[-1].recent_item_ids)


def test_published_lists_are_served_by_feast_and_match_duckdb(scored_workspace) -> None:
    settings, _ = scored_workspace
    recs = pd.read_parquet(settings.published_recommendations)
    user = recs["user_id"].iloc[0]
    top = recs[(recs["user_id"] == user) & (recs["list"] == "top")].sort_values("rank")
    expected = top["item_id"].tolist()
    fs = feature_store.store(settings)
    online = fs.get_online_features(
        features=fs.get_feature_service("recommendations_v1"), entity_rows=[{"user_id": user}]
    ).to_dict()
    assert online["item_ids"][0] == expected
    assert len(online["scores"][0]) == len(expected)
    with duckdb.connect(str(settings.published_dir / "serving.duckdb"), read_only=True) as con:
        table = con.sql("select user_id, list, item_id, rank from recommendations order by 1, 2, 4").df()
    pd.testing.assert_frame_equal(
        table.reset_index(drop=True),
        recs[["user_id", "list", "item_id", "rank"]]
        .sort_values(["user_id", "list", "rank"])
        .reset_index(drop=True),
        check_dtype=False,
    )


def test_a_stage_reruns_alone_from_its_run_folder(scored_workspace) -> None:
    """`aisle stage rank RUN_DIR` retrains and reranks from the folder's files and the run's own settings,
    and writes the same ranking, byte for byte."""
    settings, run_dir = scored_workspace
    before = _digest(run_dir / "ranked.parquet")
    (run_dir / "ranked.parquet").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "scoring", "stage", "rank", str(run_dir)],
        cwd=ROOT,
        env={**os.environ, "AISLE_DATA_DIR": str(settings.data_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _digest(run_dir / "ranked.parquet") == before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["rank"]["users"] == manifest["stages"]["training_pairs"]["users"]
    with pytest.raises(AisleError, match="no stage 'rnak'"):
        stages.rerun(run_dir, "rnak")


def test_a_failing_run_leaves_the_last_publication_intact(scored_workspace, tmp_path) -> None:
    settings, _ = scored_workspace
    before = _digest(settings.published_recommendations)
    current = (settings.runs_dir / "current").resolve()
    broken = settings.model_copy(update={"model_name": str(tmp_path / "no-such-model")})
    with pytest.raises(Exception, match="no-such-model"):
        stages.score_run(broken, stages.RunFolder.create(settings.runs_dir, {}))
    assert _digest(settings.published_recommendations) == before
    assert (settings.runs_dir / "current").resolve() == current


def test_second_run_in_a_row_succeeds_and_republishes(scored_workspace) -> None:
    settings, first_run = scored_workspace
    second_run = job.run(settings)
    assert second_run != first_run
    recs = pd.read_parquet(settings.published_recommendations)
    assert set(recs["run_id"]) == {second_run.name}
    assert (settings.runs_dir / "current").resolve() == second_run.resolve()
    lists = pd.read_parquet(settings.published_dir / "user_recommendations.parquet")
    assert set(lists["run_id"]) == {second_run.name}
    # The same purchases a moment later: the first run's tuned source knobs, reused untuned.
    first, second = (
        json.loads((run / "manifest.json").read_text())["stages"]["candidates"]
        for run in (first_run, second_run)
    )
    assert first["tuning"]["tuned"] and first["tuning"]["reused_from"] is None
    assert second["tuning"]["reused_from"] == first_run.name and not second["tuning"]["tuned"]
    assert second["source_knobs"] == first["source_knobs"]


def test_validation_rejects_short_or_unknown_lists() -> None:
    recs = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "zzz"], "rank": [1, 2]})
    with pytest.raises(stages.ValidationError, match="not in dim_items"):
        stages.validate(recs, pd.Series(["u1"]), pd.Series(["a", "b", "c"]), n=2)
    with pytest.raises(stages.ValidationError, match="no recommendations"):
        stages.validate(recs.iloc[:1], pd.Series(["u1", "u2"]), pd.Series(["a", "b"]), n=1)
