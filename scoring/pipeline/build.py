"""A governed build of the warehouse, marts and Feast registry, swapped in whole or not at all.

A full build (`make score`, `aisle features`) starts from an empty folder. An incremental build
(`make update`) starts from copies of the live build's warehouse, marts and registry and of the live
online store: dbt's incremental models load only the raw files not loaded yet, the table models rebuild
over them, and Feast materializes only the new interval (feature_store.materialize_since). Its data
tests all run; its SQL unit tests, which read fixtures and never data, run only when the dbt project
changed since the build that last passed them (the nightly one, as a rule). Both end the
same way: the online store's feature tables, then the `data/live` link, move to the new folder only once
every model, test and materialization passed. Each build folder records what it did in `build.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from scoring.errors import AisleError
from scoring.events.log import EventLog
from scoring.events.session import merge_into_session
from scoring.features import feature_store
from scoring.pipeline.run_folder import prune, swap_link
from scoring.settings import Settings
from scoring.warehouse import dbt, tables

if TYPE_CHECKING:
    from feast import FeatureStore

BUILD_RECORD = "build.json"


def build_features(settings: Settings, incremental: bool = False) -> Path:
    """dbt build, feast apply and materialize: the governed features every consumer reads.

    All three write into a new folder under `data/builds`, beside the live one; only when every model,
    every test and the materialization passed do the online store's feature tables and then the
    `data/live` link move to it. A failure anywhere leaves the last good warehouse, marts, registry
    and online store as they were. With `incremental`, the new folder is seeded from the live build
    (see the module's docstring). Returns the build folder.
    """
    root = settings.builds_dir / (datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}")
    staged = settings.for_build(root)
    record: dict = {
        "kind": "incremental" if incremental else "full",
        "started_at": datetime.now(UTC).isoformat(),
    }
    previous = settings.live_dir.resolve() if incremental else None
    record["dbt_project"] = dbt.project_digest(settings.engine)
    if previous is not None:
        _seed(settings, previous, staged)
        record["seeded_from"] = previous.name
    # The build whose SQL unit tests passed for this project: an earlier one, or this one runs them.
    unit_tested = _unit_tested(previous, record["dbt_project"])
    dbt.run(staged, "build", *(dbt.NO_UNIT_TESTS if unit_tested else ()))
    record["unit_tests_passed_in"] = unit_tested or root.name
    if previous is not None:
        _check_marts_moved(staged, previous)
    feature_store.apply(staged)
    if previous is not None:
        record["materialized"] = feature_store.materialize_since(staged, previous / "marts")
    else:
        feature_store.materialize(staged)
    fs = feature_store.store(staged)
    published = frozenset(feature_store.online_table(fs, view) for view in feature_store.PUBLISHED_VIEWS)
    log = EventLog(settings.event_log_path)
    try:
        # No event is stored or merged live between the replay and the swap, so none is lost.
        with log.exclusive():
            record["replayed_events"] = _replay_served_events(settings, fs, log)
            feature_store.swap_online_tables(
                settings.online_store_path, staged.online_store_path, keep=published
            )
    finally:
        log.close()
    staged.online_store_path.unlink()  # its rows are live now
    record["finished_at"] = datetime.now(UTC).isoformat()
    (root / BUILD_RECORD).write_text(json.dumps(record, indent=2, default=str))
    swap_link(settings.live_dir, root)
    prune(settings.builds_dir, settings.keep_builds, protect=settings.live_dir)
    return root


def _unit_tested(previous: Path | None, project: str) -> str | None:
    """The build that ran the SQL unit tests of this very dbt project, when an incremental build starts
    from one (the live build, or the one it found them passed in): its unit tests need not run again.
    A full build, or a project changed since, runs them."""
    record = previous / BUILD_RECORD if previous is not None else None
    if record is None or not record.exists():
        return None
    live = json.loads(record.read_text())
    if live.get("dbt_project") != project:
        return None
    return live.get("unit_tests_passed_in")


def _replay_served_events(settings: Settings, fs: FeatureStore, log: EventLog) -> int:
    """Merge into the new build's sessions the events the server accepted after this build sealed the
    log into raw data: the marts cannot hold them, and the swap would otherwise drop them from the live
    sessions until the next build. Only events still inside the session window can show in a session.
    Returns how many were merged."""
    since = datetime.now(UTC) - timedelta(seconds=settings.session_window_s)
    events = [e for e in log.unsealed(settings.resolved_raw_path) if e.event_at >= since]
    for event in events:
        merge_into_session(fs, event, settings.session_window_s)
    return len(events)


def _seed(settings: Settings, previous: Path, staged: Settings) -> None:
    """Copy the live build's warehouse, marts and registry, and the live online store, into the new
    build folder: dbt's incremental models append to the copies and Feast adds the new interval to them,
    while the live files stay untouched for every reader (and for a failure)."""
    if not (previous / "warehouse.duckdb").exists():
        raise AisleError(f"no live build in {settings.live_dir} to update: run `make score` first")
    staged.state_dir.mkdir(parents=True)
    shutil.copy2(previous / "warehouse.duckdb", staged.warehouse_path)
    wal = previous / "warehouse.duckdb.wal"  # left only if the last writer died before its checkpoint
    if wal.exists():
        shutil.copy2(wal, staged.warehouse_path.with_name(wal.name))
    shutil.copy2(previous / "registry.db", staged.registry_path)
    # Real copies, never hardlinks: dbt rewrites the external marts in place.
    shutil.copytree(previous / "marts", staged.marts_dir)
    feature_store.copy_online_store(settings.online_store_path, staged.online_store_path)


def _check_marts_moved(staged: Settings, previous: Path) -> None:
    """Every view of the new warehouse over an external (Parquet) mart must read the new build's file:
    one still reading the live build's would break once that build is pruned."""
    with tables.connect(staged) as con:
        views = con.sql("select view_name, sql from duckdb_views() where not internal").fetchall()
    stale = [name for name, sql in views if str(previous) in sql]
    if stale:
        raise AisleError(f"views of the new build still read the live build's marts: {', '.join(stale)}")
