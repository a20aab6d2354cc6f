"""The scorer's side of Feast: apply the repository, materialize, read features, swap online tables.

The feature repository (feature_repo/) is the definition; this module only drives it, with the paths
of the one settings object exported first so `feature_store.yaml` resolves.

The online store is the one place a reader can see a half-written state, so it is never edited in
place. A build materializes every feature view, in full, into a scratch SQLite file beside its
warehouse, and publishing writes the recommendation lists into a scratch file in the run folder; then
`swap_online_tables` replaces the live tables' rows with the scratch rows in one SQLite transaction.
Readers (the feature server keeps one connection open) see the old rows or the new ones, never a mix,
and after a build the online store holds exactly the latest offline values: rows whose snapshot
dates did not move, entities that left the marts, and a switched source included.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.repo_config import load_repo_config

from scoring.settings import FEATURE_REPO, Settings

# Feast's offline store calls a DuckDB method through ibis that DuckDB has deprecated; the warning is
# ibis's to fix, not the user's. Feast resets DeprecationWarning to "once" when it is imported, which
# overrides PYTHONWARNINGS, so this filter is installed after that import.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\.")

RECOMMENDATIONS_VIEW = "user_recommendations"
SEARCH_RESULTS_VIEW = "search_results"
# Views the scorer writes when it publishes (never materialized from files; a build keeps their rows).
PUBLISHED_VIEWS = (RECOMMENDATIONS_VIEW, SEARCH_RESULTS_VIEW)


def store(settings: Settings, online_store_path: Path | None = None) -> FeatureStore:
    """The workspace's feature store, or the same registry over another (scratch) online store."""
    settings.export()
    config = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    if online_store_path is not None:
        config.online_store.path = str(online_store_path)
    return FeatureStore(repo_path=str(FEATURE_REPO), config=config)


def apply(settings: Settings) -> None:
    """`feast apply`, as a data engineer would run it, so the CLI path is the tested path. Its long
    registry diff is shown only when it fails."""
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
    """Load the latest value of every feature view over the marts into the settings' online store.

    Always the whole history, from the earliest possible timestamp: a build's online store starts
    empty, and the data may be historical (Online Retail is from 2011), where Feast's default start of
    now - ttl would load nothing. The views the scorer writes are left to publishing.
    """
    fs = store(settings)
    views = [view.name for view in fs.list_feature_views() if view.name not in PUBLISHED_VIEWS]
    fs.materialize(
        start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=end or datetime.now(UTC), feature_views=views
    )


def online_table(fs: FeatureStore, view: str) -> str:
    """The SQLite table Feast keeps a feature view's online rows in."""
    return f"{fs.project}_{view}"


def _tables(con: sqlite3.Connection, schema: str) -> dict[str, list[str]]:
    """Each table of an attached database with the SQL that creates it and its indexes."""
    rows = con.execute(
        f"select tbl_name, type, sql from {schema}.sqlite_master where sql is not null order by type desc"
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for name, kind, sql in rows:
        if kind == "table" or name in tables:
            tables.setdefault(name, []).append(sql)
    return tables


def swap_online_tables(
    live: Path, scratch: Path, replace: set[str] | None = None, keep: frozenset[str] = frozenset()
) -> None:
    """Make the live online store's tables equal the scratch store's, in one transaction.

    `replace` names the tables whose rows are swapped (all of the scratch's when None); a table of
    `keep` is left as it is, or only created when the live store lacks it. With `replace=None`, live
    tables the scratch store no longer has are dropped (a feature view removed from the marts).
    """
    live.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(live, timeout=60, isolation_level=None)
    try:
        # WAL: the feature server keeps reading the old rows while the new ones are written.
        con.execute("pragma journal_mode=wal")
        con.execute("attach database ? as scratch", (str(scratch),))
        incoming = _tables(con, "scratch")
        present = _tables(con, "main")
        swapped = set(incoming) - keep if replace is None else replace
        con.execute("begin immediate")
        try:
            for table, statements in incoming.items():
                if table not in present:
                    for statement in statements:
                        con.execute(statement)
                if table in swapped:
                    con.execute(f'delete from main."{table}"')
                    con.execute(f'insert into main."{table}" select * from scratch."{table}"')
            if replace is None:
                for table in set(present) - set(incoming) - keep:
                    con.execute(f'drop table main."{table}"')
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    finally:
        con.close()


def prepare_scratch(live: Path, scratch: Path, tables: set[str]) -> None:
    """An empty scratch store with the live store's definition of `tables`, ready for Feast to write."""
    scratch.unlink(missing_ok=True)
    con = sqlite3.connect(scratch, isolation_level=None)
    try:
        con.execute("attach database ? as live", (str(live),))
        for table, statements in _tables(con, "live").items():
            if table in tables:
                for statement in statements:
                    con.execute(statement)
    finally:
        con.close()


def historical(settings: Settings, entity_df: pd.DataFrame, features: list[str] | str) -> pd.DataFrame:
    """Point-in-time join onto `entity_df` (needs an `event_timestamp` column) of feature references,
    or of every feature of the feature service named by a string."""
    fs = store(settings)
    selected = fs.get_feature_service(features) if isinstance(features, str) else features
    return fs.get_historical_features(entity_df=entity_df, features=selected).to_df()
