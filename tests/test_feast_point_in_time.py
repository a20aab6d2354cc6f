"""Point-in-time correctness of Feast's historical retrieval over the real marts of the tiny workspace.

A training row at time t must see each feature as it was at t: the latest snapshot at or before t,
never a later one (leakage), and nothing when that snapshot is older than the view's TTL. The oracle is
an independent as-of join in pandas (`merge_asof`) over the same Parquet files.

Every test runs against both offline stores: DuckDB's (the default engine) and Spark's (AISLE_ENGINE=spark,
on the test session's one local Spark session), which reads the same marts through SparkSources.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.features import feature_store
from scoring.settings import Settings

VIEWS = {
    # view: (mart, join keys)
    "user_stats": ("fct_user_stats", ["user_id"]),
    "item_stats": ("fct_item_stats", ["item_id"]),
    "user_item_stats": ("fct_user_item_stats", ["user_id", "item_id"]),
}


@pytest.fixture(scope="module", params=["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def store(request: pytest.FixtureRequest, workspace: Settings, tmp_path_factory: pytest.TempPathFactory):
    """The workspace's feature store on each engine's offline store. The Spark one reads the DuckDB
    build's Parquet files, so both stores answer from the same marts."""
    if request.param == "duckdb":
        return feature_store.store(workspace)
    request.getfixturevalue("spark")  # the session the Spark store queries through
    spark_store = _spark_store(
        workspace, tmp_path_factory.mktemp("spark_feast"), workspace.marts_dir.resolve()
    )
    source = spark_store.get_feature_view("user_stats").batch_source
    assert type(source).__name__ == "SparkSource" and spark_store.config.offline_store.type == "spark"
    assert Path(source.path).resolve() == (workspace.marts_dir / "fct_user_stats.parquet").resolve()
    return spark_store


def _spark_store(workspace: Settings, data_dir: Path, marts: Path):
    """A registry applied with AISLE_ENGINE=spark in a workspace of its own (so the DuckDB one is left as
    it is), over `marts` and the DuckDB build's manifest."""
    settings = workspace.model_copy(update={"engine": "spark", "data_dir": data_dir})
    settings.live_dir.mkdir(parents=True)
    (settings.live_dir / "marts").symlink_to(marts)
    (settings.live_dir / "target").symlink_to(workspace.dbt_target_dir.resolve())
    feature_store.apply(settings)
    return feature_store.store(settings)


def _mart(settings: Settings, view: str) -> pd.DataFrame:
    mart, keys = VIEWS[view]
    frame = pd.read_parquet(settings.marts_dir / f"{mart}.parquet")
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns]")
    return frame.sort_values([*keys, "event_timestamp"]).reset_index(drop=True)


def _features(store, view: str) -> list[str]:
    return [field.name for field in store.get_feature_view(view).features]


def _historical(store, view: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time join, back in entity_df's row order (Feast does not keep it)."""
    refs = [f"{view}:{name}" for name in _features(store, view)]
    frame = entity_df.assign(row=np.arange(len(entity_df)))
    joined = store.get_historical_features(entity_df=frame, features=refs).to_df()
    return joined.sort_values("row").set_index("row")


def _oracle(mart: pd.DataFrame, keys: list[str], entity_df: pd.DataFrame, ttl: timedelta) -> pd.DataFrame:
    """Latest mart row at or before each entity timestamp and no older than ttl, by plain pandas."""
    left = entity_df.assign(row=np.arange(len(entity_df))).sort_values("event_timestamp")
    right = mart.rename(columns={"event_timestamp": "feature_timestamp"}).sort_values("feature_timestamp")
    joined = pd.merge_asof(
        left,
        right,
        left_on="event_timestamp",
        right_on="feature_timestamp",
        by=keys,
        direction="backward",
        allow_exact_matches=True,
        tolerance=pd.Timedelta(ttl),
    )
    return joined.sort_values("row").set_index("row")


def _assert_same(actual: pd.DataFrame, expected: pd.DataFrame, features: list[str]) -> None:
    for name in features:
        got, want = actual[name], expected[name]
        assert got.isna().tolist() == want.isna().tolist(), f"{name}: present where the oracle has nothing"
        present = want.notna()
        assert got[present].tolist() == want[present].tolist(), name


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_values_between_updates_are_as_of_the_earlier_update(workspace: Settings, store, view: str) -> None:
    """Every snapshot, probed exactly at its time, halfway to the next one and 1 s before the next one."""
    mart, keys = _mart(workspace, view), VIEWS[view][1]
    following = mart.groupby(keys)["event_timestamp"].shift(-1)
    with_next = mart[following.notna()].assign(next=following[following.notna()])
    sample = with_next.sample(n=min(40, len(with_next)), random_state=7)
    probes = pd.concat(
        [
            sample[keys].assign(event_timestamp=sample["event_timestamp"]),
            sample[keys].assign(
                event_timestamp=sample["event_timestamp"] + (sample["next"] - sample["event_timestamp"]) / 2
            ),
            sample[keys].assign(event_timestamp=sample["next"] - pd.Timedelta(seconds=1)),
        ],
        ignore_index=True,
    )
    expected = pd.concat([sample] * 3, ignore_index=True)
    features = _features(store, view)
    # The probe is informative: the next snapshot differs, so leaking it would change the answer.
    later = mart.groupby(keys)[features].shift(-1).loc[sample.index]
    assert (later != sample[features]).any(axis=1).mean() > 0.9
    _assert_same(_historical(store, view, probes).reset_index(drop=True), expected, features)


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_random_timestamps_match_an_independent_as_of_join(workspace: Settings, store, view: str) -> None:
    """Many entities at random times across (and beyond) the data: Feast equals merge_asof with the TTL."""
    mart, keys = _mart(workspace, view), VIEWS[view][1]
    ttl = store.get_feature_view(view).ttl
    rows = _random_probes(mart, keys, ttl)
    actual = _historical(store, view, rows)
    expected = _oracle(mart, keys, rows, ttl)
    features = _features(store, view)
    assert expected[features[0]].notna().sum() > 50 and expected[features[0]].isna().sum() > 5
    _assert_same(actual, expected, features)


def _random_probes(mart: pd.DataFrame, keys: list[str], ttl: timedelta) -> pd.DataFrame:
    """300 entities of the mart at random times from a week before its first snapshot to a week past
    its last one's TTL."""
    rng = np.random.default_rng(11)
    entities = mart[keys].drop_duplicates()
    rows = entities.sample(n=300, replace=True, random_state=3).reset_index(drop=True)
    start = mart["event_timestamp"].min() - pd.Timedelta(days=7)
    span = (mart["event_timestamp"].max() + ttl + pd.Timedelta(days=7) - start).total_seconds()
    rows["event_timestamp"] = start + pd.to_timedelta(rng.uniform(0, span, len(rows)).round(), unit="s")
    return rows


def test_marts_written_by_spark_as_folders_of_part_files_are_served_the_same(
    workspace: Settings, spark, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On the Spark engine dbt writes each mart as a folder of part files, not one file: the views then
    point at the folder, and the point-in-time join over it equals the oracle's over the single file."""
    marts = tmp_path_factory.mktemp("spark_marts")
    for mart_name, _ in VIEWS.values():
        file = workspace.marts_dir / f"{mart_name}.parquet"
        spark.read.parquet(str(file)).repartition(3).write.parquet(str(marts / mart_name))
    spark_store = _spark_store(workspace, tmp_path_factory.mktemp("spark_feast_folders"), marts)
    for view, (mart_name, keys) in VIEWS.items():
        source = spark_store.get_feature_view(view).batch_source
        assert Path(source.path).resolve() == (marts / mart_name).resolve()
        assert len(list(Path(source.path).glob("part-*.parquet"))) == 3
        mart = _mart(workspace, view)
        ttl = spark_store.get_feature_view(view).ttl
        rows = _random_probes(mart, keys, ttl)
        _assert_same(
            _historical(spark_store, view, rows), _oracle(mart, keys, rows, ttl), _features(spark_store, view)
        )


def test_no_value_before_the_first_snapshot(workspace: Settings, store) -> None:
    mart = _mart(workspace, "user_stats")
    first = mart.groupby("user_id", as_index=False)["event_timestamp"].min().head(20)
    probes = first.assign(event_timestamp=first["event_timestamp"] - pd.Timedelta(seconds=1))
    actual = _historical(store, "user_stats", probes)
    assert actual[_features(store, "user_stats")].isna().all().all()


@pytest.mark.parametrize(
    ("view", "ttl_days"), [("item_stats", 14), ("user_stats", 365), ("user_item_stats", 730)]
)
def test_a_snapshot_older_than_the_ttl_is_not_returned(
    workspace: Settings, store, view: str, ttl_days: int
) -> None:
    assert store.get_feature_view(view).ttl == timedelta(days=ttl_days)
    mart, keys = _mart(workspace, view), VIEWS[view][1]
    last = mart.groupby(keys, as_index=False).tail(1).head(20).reset_index(drop=True)
    ttl = pd.Timedelta(days=ttl_days)
    inside = last[keys].assign(event_timestamp=last["event_timestamp"] + ttl - pd.Timedelta(minutes=1))
    beyond = last[keys].assign(event_timestamp=last["event_timestamp"] + ttl + pd.Timedelta(minutes=1))
    features = _features(store, view)
    _assert_same(_historical(store, view, inside).reset_index(drop=True), last, features)
    assert _historical(store, view, beyond)[features].isna().all().all()


def test_item_text_has_no_ttl(workspace: Settings, store) -> None:
    """ttl 0 means the catalogue text never expires: an item's title is found years later."""
    assert store.get_feature_view("item_text").ttl == timedelta(0)
    items = pd.read_parquet(workspace.marts_dir / "dim_items.parquet").head(10)
    probes = items[["item_id"]].assign(event_timestamp=pd.Timestamp("2036-01-01"))
    frame = probes.assign(row=np.arange(len(probes)))
    actual = store.get_historical_features(entity_df=frame, features=["item_text:title"]).to_df()
    assert sorted(actual["title"]) == sorted(items["title"])
