"""The scorer's side of Feast: apply the repository, materialize, read features, publish lists.

The feature repository (feature_repo/) is the definition; this module only drives it, with the paths
of the one settings object exported first so `feature_store.yaml` resolves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from scoring.settings import FEATURE_REPO, Settings


def store(settings: Settings) -> FeatureStore:
    settings.export()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(FEATURE_REPO))


def apply(settings: Settings) -> None:
    """`feast apply`, as a data engineer would run it, so the CLI path is the tested path. Its long
    registry diff is shown only when it fails."""
    settings.export()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    feast = str(Path(sys.executable).with_name("feast"))
    result = subprocess.run(
        [feast, "-c", str(FEATURE_REPO), "apply"],
        env={**os.environ, **settings.environ()},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"feast apply failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "feast apply: done")


def materialize(settings: Settings, end: datetime | None = None) -> None:
    """Load the latest feature values into the SQLite online store.

    The first time, the window starts at the earliest feature timestamp: the data may be historical
    (Online Retail is from 2011), where Feast's default start of now - ttl would load nothing. After
    that, `feast materialize-incremental` continues from where the last run ended.
    """
    fs = store(settings)
    end = end or datetime.now(UTC)
    views = [view for view in fs.list_feature_views() if view.name != "user_recommendations"]
    fresh = [view.name for view in views if not view.materialization_intervals]
    if fresh:
        fs.materialize(start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=end, feature_views=fresh)
    done = [view.name for view in views if view.name not in fresh]
    if done:
        fs.materialize_incremental(end_date=end, feature_views=done)


def historical(settings: Settings, entity_df: pd.DataFrame, features: list[str] | str) -> pd.DataFrame:
    """Point-in-time join onto `entity_df` (needs an `event_timestamp` column) of feature references,
    or of every feature of the feature service named by a string."""
    fs = store(settings)
    selected = fs.get_feature_service(features) if isinstance(features, str) else features
    return fs.get_historical_features(entity_df=entity_df, features=selected).to_df()
