"""A governed build of the warehouse, marts and Feast registry, swapped in whole or not at all."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from scoring.features import feature_store
from scoring.pipeline.run_folder import prune, swap_link
from scoring.settings import Settings
from scoring.warehouse import dbt


def build_features(settings: Settings) -> Path:
    """dbt build, feast apply and materialize: the governed features every consumer reads.

    All three write into a new folder under `data/builds`, beside the live one; only when every model,
    every test and the materialization passed do the online store's feature tables and then the
    `data/live` link move to it. A failure anywhere leaves the last good warehouse, marts, registry
    and online store as they were. Returns the build folder.
    """
    root = settings.builds_dir / (datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}")
    staged = settings.for_build(root)
    dbt.run(staged, "build")
    feature_store.apply(staged)
    feature_store.materialize(staged)
    fs = feature_store.store(staged)
    published = frozenset(feature_store.online_table(fs, view) for view in feature_store.PUBLISHED_VIEWS)
    feature_store.swap_online_tables(settings.online_store_path, staged.online_store_path, keep=published)
    staged.online_store_path.unlink()  # its rows are live now
    swap_link(settings.live_dir, root)
    prune(settings.builds_dir, settings.keep_builds, protect=settings.live_dir)
    return root
