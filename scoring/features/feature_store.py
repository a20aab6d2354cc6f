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

An incremental build (`make update`) starts its scratch store as a copy of the live one and materializes
only the new interval (`materialize_since`): the rows newer than the previous build's marts. Rows that
changed at older snapshot times (a late return, a corrected row) are rewritten for their entities, and
entities that left a mart are deleted, so the scratch store ends exactly as a full materialization would.

On Spark (AISLE_ENGINE=spark) the views read the marts through Feast's Spark offline store, on the
process's one Spark session (scoring/spark/session.py); the online store stays SQLite either way.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import duckdb
import pandas as pd
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import load_repo_config

from scoring.settings import FEATURE_REPO, Settings

# Feast's offline store calls a DuckDB method through ibis that DuckDB has deprecated; the warning is
# ibis's to fix, not the user's. Feast resets DeprecationWarning to "once" when it is imported, which
# overrides PYTHONWARNINGS, so this filter is installed after that import.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\.")
# On Spark, Feast warns that its Spark source and offline store are alpha at every read of a view from
# the registry and every query; what Aisle uses of them (Parquet paths, point-in-time joins) is what
# tests/test_feast_point_in_time.py checks against the DuckDB store and an independent oracle.
warnings.filterwarnings(
    "ignore", "The spark (data source API|offline store) is an experimental", RuntimeWarning
)

RECOMMENDATIONS_VIEW = "user_recommendations"
SEARCH_RESULTS_VIEW = "search_results"
# Views the scorer writes when it publishes (never materialized from files; a build keeps their rows).
PUBLISHED_VIEWS = (RECOMMENDATIONS_VIEW, SEARCH_RESULTS_VIEW)


def store(settings: Settings, online_store_path: Path | None = None) -> FeatureStore:
    """The workspace's feature store, or the same registry over another (scratch) online store.

    On Spark the offline store gets the settings' `spark_conf`: Feast's Spark store uses the process's
    active session and starts one itself, with that configuration, only in a thread that has none. No
    session is started here, so a reader of online features (the feature server) never starts a JVM;
    the functions below that read the marts start it first (`_start_offline_engine`).
    """
    settings.export()
    config = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    if online_store_path is not None:
        config.online_store.path = str(online_store_path)
    if settings.engine == "spark":
        from scoring.spark.session import spark_conf

        config.offline_store.spark_conf = spark_conf(settings)
    return FeatureStore(repo_path=str(FEATURE_REPO), config=config)


def _start_offline_engine(settings: Settings) -> None:
    """On Spark, the process's one session, started from the settings (scoring/spark/session.py) before
    Feast reads the marts, or found if dbt or the scorer started it: the same session either way."""
    if settings.engine == "spark":
        from scoring.spark.session import spark_session

        spark_session(settings)


def apply(settings: Settings) -> None:
    """`feast apply`: what the CLI runs (`feast -c feature_repo apply`), in a forked child of this process.

    The child runs the CLI's own steps (`cli_check_repo`, `load_repo_config`, `apply_total`) with the
    settings' environment, so it applies exactly what a data engineer's `feast apply` would. It is a fork
    rather than the `feast` executable because a new process spends ~5 s importing Feast (and the torch
    Feast imports) before it reads a file, against ~0.5 s of applying; this process has imported both
    already, and every build pays the apply. A child rather than this process because `apply_total`
    changes the working directory and imports the repository's modules, whose definitions read the
    environment when imported: a second build in the same process would get the first one's. Its
    output, the long registry diff, is shown only when it fails.

    On Spark, source validation is skipped: it would read each mart's schema through a Spark session
    the child would have to start, and it fails on the published views' files, which exist only after
    the first scoring run (the FileSources DuckDB uses merely warn then). The point-in-time tests read
    every mart through the Spark store instead.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as output:
        child = os.fork()
        if child == 0:  # pragma: no cover - measured by the parent's exit status and the registry it reads
            _apply_in_child(settings, output.fileno())
        status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
    if status != 0:
        raise RuntimeError(f"feast apply failed (exit {status}):\n{text[-8000:]}")
    print(text.splitlines()[-1] if text else "feast apply: done")


def _apply_in_child(settings: Settings, output: int) -> NoReturn:
    """The forked child of `apply`: the CLI's apply, its output into `output`, then exit without running
    the parent's exit handlers."""
    code = 1
    try:
        os.dup2(output, 1)
        os.dup2(output, 2)
        sys.stdout = sys.stderr = open(output, "w", closefd=False)  # noqa: SIM115 - the child exits below
        from feast.repo_operations import apply_total, cli_check_repo

        os.environ.update(settings.environ())
        yaml = FEATURE_REPO / "feature_store.yaml"
        cli_check_repo(FEATURE_REPO, yaml)
        apply_total(load_repo_config(FEATURE_REPO, yaml), FEATURE_REPO, settings.engine == "spark")
        code = 0
    except BaseException:  # noqa: BLE001 - the child's one way out is its exit status
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def materialize(settings: Settings, end: datetime | None = None) -> None:
    """Load the latest value of every feature view over the marts into the settings' online store.

    Always the whole history, from the earliest possible timestamp: a build's online store starts
    empty, and the data may be historical (Online Retail is from 2011), where Feast's default start of
    now - ttl would load nothing. The views the scorer writes are left to publishing.
    """
    _start_offline_engine(settings)
    fs = store(settings)
    fs.materialize(
        start_date=EPOCH,
        end_date=end or datetime.now(UTC),
        feature_views=[view.name for view in materialized_views(fs)],
    )


EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


def materialized_views(fs: FeatureStore) -> list:
    """The views a build materializes from the marts: the batch views and the stream views' batch sources
    (session activity, which `/events` pushes to between builds), not the scorer's published views.
    Feast lists stream views apart from the others."""
    views = [*fs.list_feature_views(), *fs.list_stream_feature_views()]
    return [view for view in views if view.name not in PUBLISHED_VIEWS]


def copy_online_store(live: Path, copy: Path) -> None:
    """A consistent copy of the live SQLite store (its WAL included), through SQLite's backup API."""
    copy.unlink(missing_ok=True)
    source = sqlite3.connect(live, timeout=60)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def materialize_since(settings: Settings, previous_marts: Path, end: datetime | None = None) -> dict:
    """Bring the settings' online store, a copy of the store a full materialization of `previous_marts`
    filled, up to the settings' marts by loading only what is new.

    Per view: Feast materializes the interval from the previous mart's newest snapshot time to `end`
    (what `materialize_incremental` does, with the interval's start taken from the data rather than from
    the registry's wall-clock record, as the marts' times are the shop's, not the build's). Entities with
    a row added, changed or removed before that interval get their latest row written again, and an
    entity with no row left is deleted. A view whose mart is new is materialized whole. Returns, per
    view, the interval and the entities rewritten or deleted.
    """
    end = end or datetime.now(UTC)
    _start_offline_engine(settings)
    fs = store(settings)
    record: dict[str, dict] = {}
    with duckdb.connect() as con:
        for view in materialized_views(fs):
            new = Path(view.batch_source.path)
            old = previous_marts / new.name
            if not old.exists():
                fs.materialize(start_date=EPOCH, end_date=end, feature_views=[view.name])
                record[view.name] = {"start": str(EPOCH), "end": str(end), "whole": True}
                continue
            ts = view.batch_source.timestamp_field
            start = con.sql(f"select max({ts}) from {_scan(old)}").fetchall()[0][0]
            start = EPOCH if start is None else pd.Timestamp(start).tz_localize(UTC).to_pydatetime()
            fs.materialize(start_date=start, end_date=end, feature_views=[view.name])
            rewritten, deleted = _repair(con, fs, view, new, old, start, end)
            record[view.name] = {
                "start": str(start),
                "end": str(end),
                "rewritten": rewritten,
                "deleted": deleted,
            }
    return record


def _repair(
    con, fs: FeatureStore, view, new: Path, old: Path, start: datetime, end: datetime
) -> tuple[int, int]:
    """Rewrite the latest row of every entity whose rows changed up to `start`; delete the entities
    that have no row left. Returns (rewritten, deleted)."""
    keys = ", ".join(view.join_keys)
    ts = view.batch_source.timestamp_field
    start_utc, end_utc = (pd.Timestamp(t).tz_convert(UTC).tz_localize(None) for t in (start, end))
    changed = f"""
        select distinct {keys} from (
            (select * from {_scan(new)} except all select * from {_scan(old)})
            union all
            (select * from {_scan(old)} except all select * from {_scan(new)})
        ) where {ts} <= timestamp '{start_utc}'
    """
    latest = con.sql(
        f"""
        select n.* from {_scan(new)} n semi join ({changed}) c using ({keys})
        where n.{ts} <= timestamp '{end_utc}'
        qualify row_number() over (partition by {", ".join(f"n.{k}" for k in view.join_keys)}
                                   order by n.{ts} desc) = 1
        """
    ).df()
    if len(latest):
        fs.write_to_online_store(view.name, latest)
    gone = con.sql(f"select * from ({changed}) anti join {_scan(new)} n using ({keys})").df()
    if len(gone):
        _delete_entities(fs, view, gone)
    return len(latest), len(gone)


def _scan(mart: Path) -> str:
    """DuckDB's scan of a mart: its Parquet file, or every part file of the folder Spark wrote."""
    return f"read_parquet('{mart / '**' / '*.parquet' if mart.is_dir() else mart}')"


def _delete_entities(fs: FeatureStore, view, keys: pd.DataFrame) -> None:
    """Delete entities' rows from a view's online table (an entity that left its mart entirely)."""
    version = fs.config.entity_key_serialization_version
    names = sorted(view.join_keys)
    serialized = [
        serialize_entity_key(
            EntityKey(join_keys=names, entity_values=[Value(string_val=str(row[k])) for k in names]), version
        )
        for _, row in keys.iterrows()
    ]
    con = sqlite3.connect(fs.config.online_store.path, timeout=60)
    try:
        with con:
            con.executemany(
                f'delete from "{online_table(fs, view.name)}" where entity_key = ?',
                [(k,) for k in serialized],
            )
    finally:
        con.close()


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
    _start_offline_engine(settings)
    fs = store(settings)
    selected = fs.get_feature_service(features) if isinstance(features, str) else features
    return fs.get_historical_features(entity_df=entity_df, features=selected).to_df()
