"""Online equals offline: after materialize, what the SQLite online store answers for an entity is exactly
the entity's latest row in the offline store (the dbt mart), feature by feature, timestamp included.
"""

from __future__ import annotations

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
    "user_history": ("fct_user_histories", ["user_id"]),
    "item_text": ("dim_items", ["item_id"]),
}
SAMPLE = 25


@pytest.fixture(scope="module")
def store(workspace: Settings):
    return feature_store.store(workspace)


def _plain(value: object) -> object:
    """Lists arrive as numpy arrays from Parquet and as lists from the online store."""
    return list(value) if isinstance(value, np.ndarray | list) else value


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_online_values_equal_the_latest_offline_values(workspace: Settings, store, view: str) -> None:
    mart, keys = VIEWS[view]
    features = [field.name for field in store.get_feature_view(view).features]
    rows = pd.read_parquet(workspace.marts_dir / f"{mart}.parquet")
    entities = rows[keys].drop_duplicates().sample(n=SAMPLE, random_state=5).reset_index(drop=True)

    # Offline: Feast's point-in-time join as of each entity's latest snapshot is that snapshot.
    latest = rows.merge(entities, on=keys).groupby(keys, as_index=False)["event_timestamp"].max()
    offline = store.get_historical_features(
        entity_df=latest, features=[f"{view}:{name}" for name in features]
    ).to_df()
    offline = entities.merge(offline, on=keys, how="left")
    assert offline[features].notna().any(axis=1).all(), "the offline store lost an entity"

    online = store.get_online_features(
        features=[f"{view}:{name}" for name in features], entity_rows=entities.to_dict("records")
    ).to_dict(include_event_timestamps=True)

    for name in features:
        got = [_plain(value) for value in online[name]]
        want = [_plain(value) for value in offline[name]]
        assert got == want, f"{view}.{name}: online differs from offline"
    stamps = pd.to_datetime(pd.Series(online[f"{features[0]}__ts"]), unit="s")
    assert stamps.tolist() == entities.merge(latest, on=keys)["event_timestamp"].tolist()


def test_online_recommendations_equal_the_published_file(scored_workspace: tuple[Settings, object]) -> None:
    settings, _ = scored_workspace
    published = pd.read_parquet(settings.published_dir / "user_recommendations.parquet")
    sample = published.sample(n=SAMPLE, random_state=5).reset_index(drop=True)
    fs = feature_store.store(settings)
    online = fs.get_online_features(
        features=fs.get_feature_service("recommendations_v1"),
        entity_rows=[{"user_id": u} for u in sample.user_id],
    ).to_dict()
    assert online["item_ids"] == [list(ids) for ids in sample["item_ids"]]
    assert online["sources"] == [list(sources) for sources in sample["sources"]]
    assert online["run_id"] == sample["run_id"].tolist()
    for got, want in zip(online["scores"], sample["scores"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)  # Float32 in Feast, float64 in the file
