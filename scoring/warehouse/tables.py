"""Read the warehouse dbt built: read-only connections, queries, and the marts' Parquet files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from scoring.settings import Settings


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse dbt built (dbt holds the write lock only while it runs)."""
    if settings.engine == "spark":
        return _spark_warehouse(settings)
    path = settings.warehouse_path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: build the workspace first (make features).")
    return duckdb.connect(str(path), read_only=True)


def read(settings: Settings, sql: str) -> pd.DataFrame:
    with connect(settings) as con:
        return con.sql(sql).df()


def _spark_warehouse(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The warehouse dbt built on Spark, as DuckDB views over its Parquet: every table of Spark's
    warehouse folder as `<schema>.<table>` and every mart as `<model>`, so the scorer's SQL reads either
    engine's build unchanged (Spark's metastore is Derby, which one process at a time may open)."""
    warehouse = settings.spark_dir / "warehouse"
    if not warehouse.is_dir():
        raise FileNotFoundError(f"{warehouse} does not exist: build the workspace first (make features).")
    con = duckdb.connect()
    folders = [
        (schema.stem, table) for schema in sorted(warehouse.glob("*.db")) for table in schema.iterdir()
    ]
    folders += [("main", mart) for mart in sorted(settings.marts_dir.iterdir())]
    for schema, folder in folders:
        if folder.is_dir() and next(folder.rglob("*.parquet"), None) is not None:
            glob = str(folder / "**" / "*.parquet").replace("'", "''")
            con.execute(f'create schema if not exists "{schema}"')
            con.execute(f'create view "{schema}"."{folder.name}" as select * from read_parquet(\'{glob}\')')
    return con


def mart_path(settings: Settings, model: str) -> Path:
    """The Parquet dbt wrote for a mart: DuckDB's external file `<model>.parquet`, or on Spark the
    table's folder `<model>/` of part files (pandas and pyarrow read either)."""
    file = settings.marts_dir / f"{model}.parquet"
    return settings.marts_dir / model if settings.engine == "spark" and not file.exists() else file
