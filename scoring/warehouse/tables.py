"""Read the warehouse dbt built: read-only connections, queries, and the marts' Parquet files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from scoring.settings import Settings


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse dbt built (dbt holds the write lock only while it runs)."""
    path = settings.warehouse_path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: build the workspace first (make features).")
    return duckdb.connect(str(path), read_only=True)


def read(settings: Settings, sql: str) -> pd.DataFrame:
    with connect(settings) as con:
        return con.sql(sql).df()


def mart_path(settings: Settings, model: str) -> Path:
    """The Parquet file dbt wrote for an external mart."""
    return settings.marts_dir / f"{model}.parquet"
