"""`make update` against a full rebuild: incremental equals full, and an update never breaks a publication.

One tiny demo workspace is built and scored (`make score`) with its last day held back as a dated drop
(`demo_pending_days=1`, scoring/ingest/arrivals.py). Its data folder is then snapshotted, and day N is
processed twice in the same folder (so every path, e.g. dbt's `source_file`, is the same):
(a) release day N + `aisle update` (incremental dbt build, Feast's new interval, the changed users scored
    with the promoted run);
(b) the snapshot restored, release day N + a full rebuild + every active user scored with the same
    promoted run (`update.rescore`, the same scoring code).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from retrieval import candidates as cand
from retrieval import index as faiss_index
from scoring.errors import AisleError
from scoring.features import feature_store
from scoring.ingest.prepare import next_day, prepare_raw
from scoring.pipeline import publish, stages, update
from scoring.pipeline.build import BUILD_RECORD, build_features
from scoring.pipeline.lock import RunInProgress
from scoring.pipeline.run_folder import RunFolder
from scoring.pipeline.stages import score_run
from scoring.settings import Settings
from tests.conftest import tiny_settings

PUBLISHED = ("recommendations.parquet", "user_recommendations.parquet", "candidates.parquet")


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in a canonical order, list and array cells as text, so two frames compare as sets of rows."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, list | np.ndarray | dict)).any():
            frame[column] = frame[column].map(lambda v: json.dumps(np.asarray(v).tolist(), default=str))
    return frame.sort_values(list(frame.columns), na_position="first").reset_index(drop=True)


def _warehouse(settings: Settings) -> dict[str, pd.DataFrame]:
    """Every table dbt built (staging, intermediate, marts, governance: quarantine and conservation)."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        names = con.sql(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
        ).fetchall()
        return {
            f"{schema}.{name}": con.sql(f'select * from "{schema}"."{name}"').df() for schema, name in names
        }


def _online(settings: Settings) -> dict[str, pd.DataFrame]:
    """Every materialized view's online values for every entity of its mart, read through Feast."""
    fs = feature_store.store(settings)
    values = {}
    for view in feature_store.materialized_views(fs):
        keys = pd.read_parquet(view.batch_source.path, columns=view.join_keys).drop_duplicates()
        # A stream view read back from the registry lists its join key among its features.
        features = [
            f"{view.name}:{field.name}" for field in view.features if field.name not in view.join_keys
        ]
        rows = fs.get_online_features(features=features, entity_rows=keys.to_dict("records")).to_df()
        values[view.name] = rows
    return values


def _snapshot(settings: Settings) -> dict:
    """What the comparison reads of a workspace after day N."""
    marts = {p.name: pd.read_parquet(p) for p in sorted(settings.marts_dir.glob("*.parquet"))}
    current = (settings.runs_dir / "current").resolve()
    return {
        "warehouse": _warehouse(settings),
        "marts": marts,
        "online": _online(settings),
        "published": {name: pd.read_parquet(settings.published_dir / name) for name in PUBLISHED},
        "scored": set(pd.read_parquet(current / "users.parquet")["user_id"]),
        "manifest": json.loads((current / "manifest.json").read_text()),
        "served": _served_lists(settings),
        "dbt_resources": _dbt_resources(settings.live_dir),
    }


def _dbt_resources(build: Path) -> set[str]:
    """The kinds of node (model, test, unit_test, ...) the build's `dbt build` ran."""
    results = json.loads((build / "target" / "run_results.json").read_text())["results"]
    return {result["unique_id"].split(".")[0] for result in results}


def _served_lists(settings: Settings) -> pd.DataFrame:
    """Every published user's online top list (recommendations_v1's user_recommendations)."""
    users = pd.read_parquet(settings.published_dir / "user_recommendations.parquet", columns=["user_id"])
    fs = feature_store.store(settings)
    return fs.get_online_features(
        features=["user_recommendations:item_ids"], entity_rows=users.to_dict("records")
    ).to_df()


@pytest.fixture(scope="module")
def day_n(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict, dict, dict]:
    """(the workspace after (b), the snapshot after (a), after (b), and the base publication)."""
    settings = tiny_settings(tmp_path_factory.mktemp("update") / "data", demo_pending_days=1)
    prepare_raw(settings)
    build_features(settings)
    run = RunFolder.create(settings.runs_dir, settings.model_dump(mode="json"))
    score_run(settings, run)
    run.promote(settings.runs_dir)
    base = {name: pd.read_parquet(settings.published_dir / name) for name in PUBLISHED}
    held = settings.data_dir.with_name("days-1-to-n-1")
    shutil.copytree(settings.data_dir, held, symlinks=True)

    next_day(settings)
    update.run(settings)
    incremental = _snapshot(settings)

    shutil.rmtree(settings.data_dir)
    shutil.copytree(held, settings.data_dir, symlinks=True)
    next_day(settings)
    update.rescore(settings)
    full = _snapshot(settings)
    return settings, incremental, full, base


def _same_tables(ours: dict[str, pd.DataFrame], theirs: dict[str, pd.DataFrame]) -> None:
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        pd.testing.assert_frame_equal(
            _comparable(ours[name]), _comparable(theirs[name]), check_exact=False, rtol=1e-9, obj=name
        )


def test_incremental_update_equals_full_build(day_n) -> None:
    """Day N by `aisle update` against days 1..N at once, with the same promoted run.

    Identical: every table dbt built (staging, intermediate, marts, the quarantine and the row
    conservation figures), every external mart, Feast's online value of every feature of every entity,
    and, for every user the update scored, the published lists and candidate pool (scores to float
    rounding: BLAS sums in another order when another number of users is scored).

    Inherent, and bounded below: a user whose data did not change keeps the list published as of the
    previous day (the update does not touch it), while the full path rescores everyone as of day N, one
    day later: the repeat source's time decay, the popularity window and the recency features moved, and
    the global models (ALS, EASE, TIFU-KNN, co-purchase) were refitted with day N's purchases.
    """
    _, incremental, full, base = day_n
    _same_tables(incremental["warehouse"], full["warehouse"])
    _same_tables(incremental["marts"], full["marts"])
    _same_tables(incremental["online"], full["online"])

    build = incremental["manifest"]["build_record"]
    assert build["kind"] == "incremental" and build["materialized"]
    assert incremental["manifest"]["kind"] == "update"

    scored = incremental["scored"]
    assert scored, "day N changed no user: the demo's held-back day should bring purchases"
    assert scored < full["scored"], "the update scored every user: it should score only the changed ones"
    for name, columns in (
        ("recommendations.parquet", ["user_id", "list", "rank"]),
        ("candidates.parquet", ["user_id", "rank"]),
    ):
        ours = incremental["published"][name]
        theirs = full["published"][name]
        ours = ours[ours["user_id"].isin(scored)].sort_values(columns).reset_index(drop=True)
        theirs = theirs[theirs["user_id"].isin(scored)].sort_values(columns).reset_index(drop=True)
        assert ours["item_id"].tolist() == theirs["item_id"].tolist(), name
        np.testing.assert_allclose(ours["score"], theirs["score"], rtol=1e-4, atol=1e-6)
        if "reason" in ours:
            assert ours["reason"].tolist() == theirs["reason"].tolist()

    # Untouched users: exactly the previous publication, and close to a full rescore one day later.
    published = incremental["published"]["recommendations.parquet"]
    before = base["recommendations.parquet"]
    kept = sorted(set(published["user_id"]) - scored)
    assert kept
    order = ["user_id", "list", "rank"]
    carried = published[published["user_id"].isin(kept)].sort_values(order).reset_index(drop=True)
    previous = before[before["user_id"].isin(kept)].sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(carried, previous)
    top = published[(published["list"] == "top") & published["user_id"].isin(kept)]
    rescored = full["published"]["recommendations.parquet"]
    rescored = rescored[(rescored["list"] == "top") & rescored["user_id"].isin(kept)]
    ours_sets = top.groupby("user_id")["item_id"].agg(set)
    theirs_sets = rescored.groupby("user_id")["item_id"].agg(set)
    overlap = np.mean([len(ours_sets[u] & theirs_sets[u]) / len(ours_sets[u]) for u in kept])
    assert overlap >= 0.7, f"untouched users' top lists share only {overlap:.0%} of items with a rescore"

    # Online = published, both ways: every published user is served exactly their published list.
    for snapshot in (incremental, full):
        lists = snapshot["published"]["user_recommendations.parquet"].set_index("user_id")["item_ids"]
        served = snapshot["served"].set_index("user_id")["item_ids"]
        assert {u: list(v) for u, v in served.items()} == {u: list(v) for u, v in lists.items()}


def test_an_update_leaves_the_sql_unit_tests_to_the_build_that_passed_them(day_n) -> None:
    """SQL unit tests read fixtures, never data: the nightly build runs them, and an update of the same
    dbt project runs every model and data test but not them again, until the project changes."""
    settings, incremental, full, _ = day_n
    rescored, updated = full["manifest"]["build_record"], incremental["manifest"]["build_record"]
    assert rescored["kind"] == "full" and "unit_test" in full["dbt_resources"]
    assert rescored["unit_tests_passed_in"] == full["manifest"]["build"]
    assert updated["unit_tests_passed_in"] == updated["seeded_from"]  # the nightly build
    assert {"model", "test"} <= incremental["dbt_resources"]
    assert "unit_test" not in incremental["dbt_resources"]

    # The live build was made by another version of the project: the next update runs them again.
    record_path = settings.live_dir / BUILD_RECORD
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "dbt_project": "another"}))
    build = build_features(settings, incremental=True)
    assert json.loads((build / BUILD_RECORD).read_text())["unit_tests_passed_in"] == build.name
    assert "unit_test" in _dbt_resources(build)


def test_update_with_no_new_data_changes_nothing(day_n) -> None:
    settings = day_n[0]
    current = (settings.runs_dir / "current").resolve()
    before = {name: (settings.published_dir / name).read_bytes() for name in PUBLISHED}
    assert update.run(settings) == current
    assert (settings.runs_dir / "current").resolve() == current
    assert {name: (settings.published_dir / name).read_bytes() for name in PUBLISHED} == before


def test_failed_update_leaves_the_publication_and_current_run(day_n) -> None:
    """A drop that breaks the raw contract fails the update; nothing readers see moves."""
    settings = day_n[0]
    current = (settings.runs_dir / "current").resolve()
    live = settings.live_dir.resolve()
    before = {name: (settings.published_dir / name).read_bytes() for name in PUBLISHED}
    served = _served_lists(settings)
    broken = settings.resolved_raw_path / "events-2099-01-01.parquet"
    broken.write_bytes(b"not a parquet file")
    try:
        with pytest.raises(AisleError, match="dbt build (.+ )?failed"):
            update.run(settings)
    finally:
        broken.unlink()
    assert (settings.runs_dir / "current").resolve() == current
    assert settings.live_dir.resolve() == live
    assert {name: (settings.published_dir / name).read_bytes() for name in PUBLISHED} == before
    pd.testing.assert_frame_equal(_served_lists(settings), served)


def test_overlapping_update_is_refused(day_n) -> None:
    settings = day_n[0]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from scoring.pipeline.lock import workspace_lock
                with workspace_lock(Path({str(settings.lock_path)!r}), "aisle score"):
                    print("held", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInProgress, match="aisle score"):
            update.run(settings)
    finally:
        holder.kill()
        holder.wait()


def test_update_needs_a_promoted_run(tmp_path: Path) -> None:
    with pytest.raises(AisleError, match="make score"):
        update.run(tiny_settings(tmp_path))


def test_candidates_of_a_user_do_not_depend_on_who_else_is_scored() -> None:
    """Global models are fitted on everyone's purchases: scoring one user alone (an update) gives them
    the candidates they get among everyone (`make score`)."""
    rng = np.random.default_rng(0)
    users, items = [f"u{i}" for i in range(30)], np.array([f"i{i}" for i in range(25)])
    lines = pd.DataFrame(
        {
            "user_id": rng.choice(users, 400),
            "item_id": rng.choice(items, 400),
            "ordered_at": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 60, 400), unit="D"),
        }
    )
    vectors = rng.normal(size=(len(items), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, _ = faiss_index.build(vectors, ann_threshold=100)
    catalogue = cand.Catalogue(index, items, np.array([f"gift {i % 5} colour {i % 3}" for i in range(25)]))
    everyone = np.array(sorted(users))
    queries = rng.normal(size=(len(everyone), 8)).astype(np.float32)
    budget = cand.Budget(k=10, popular_k=5, als_dim=8, als_iterations=5)
    as_of = pd.Timestamp("2026-03-15")
    together = cand.generate(lines, cand.Queries(everyone, queries), catalogue, as_of, budget)
    alone = cand.generate(lines, cand.Queries(everyone[3:4], queries[3:4]), catalogue, as_of, budget)
    theirs = together[together["user_id"] == everyone[3]].sort_values("item_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(alone.sort_values("item_id").reset_index(drop=True), theirs, rtol=1e-5)


def test_published_candidates_are_each_users_best_ranked_candidates() -> None:
    ranked = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "v"],
            "item_id": ["a", "b", "c", "a"],
            "score": [0.1, 0.5, 0.3, 0.2],
            "repeat": [0.0, 1.0, 0.0, 0.0],
            "times_bought": [0, 2, 0, 0],
            "category": ["x", None, "y", "x"],
        }
    )
    pool = publish.candidates_frame(ranked, 2, "run-1")
    assert pool.columns.tolist() == publish.CANDIDATES_SCHEMA.names
    assert pool[["user_id", "item_id", "rank"]].values.tolist() == [
        ["u", "b", 1],
        ["u", "c", 2],
        ["v", "a", 1],
    ]
    assert set(pool["run_id"]) == {"run-1"}


def test_update_and_shards_follow_the_promoted_runs_embedding_gate() -> None:
    """`make update` and the Spark shards generate the encoder's candidates only when the run's rank stage
    kept them (a run from before the gate did), unless the settings say always or never."""
    gated = Settings(embedding_candidates="gated")
    dropped = {"stages": {"rank": {"embedding_gate": {"kept": False}}}}
    kept = {"stages": {"rank": {"embedding_gate": {"kept": True}}}}
    before = {"stages": {"rank": {}}}
    assert [stages.embedding_kept(gated, m) for m in (dropped, kept, before)] == [False, True, True]
    assert stages.embedding_kept(Settings(embedding_candidates="always"), dropped) is True
    assert stages.embedding_kept(Settings(embedding_candidates="never"), kept) is False
    knobs = stages.recorded_knobs(
        {
            "ease": {"value": 200.0},
            "decayed_repurchase": {"value": 60.0},
            "tifu_knn": {"neighbours": 100, "alpha": 0.5, "r_basket": 0.9, "r_group": 0.7, "group_size": 7},
        }
    )
    assert stages.budget(gated, knobs).embedding is True
    assert stages.budget(gated, knobs, embedding=False).embedding is False
    assert stages.budget(Settings(embedding_candidates="never"), knobs).embedding is False
