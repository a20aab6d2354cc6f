"""The one Spark session of a process, configured from the settings.

dbt-spark's session method, Feast's Spark offline store and the sharded scorer all call
`SparkSession.builder.getOrCreate()`, so whichever starts first fixes the session for the rest of the
process. Starting it here first, from the settings, means a tiny shop gets a few shuffle partitions
instead of Spark's 200, the UI stays off, and the warehouse folder and Derby metastore land in the
build's `spark/` folder instead of the current directory.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from scoring.errors import AisleError
from scoring.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkUnavailable(AisleError):
    """pyspark or Java is missing: Spark is an optional extra (`pip install -e .[spark]`)."""


def spark_conf(settings: Settings) -> dict[str, str]:
    """The session's configuration: the same keys dbt's profile passes as server_side_parameters."""
    folder = settings.spark_dir.absolute()
    return {
        "spark.master": settings.spark_master,
        "spark.app.name": "aisle",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.default.parallelism": str(settings.spark_shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # The driver listens on loopback only, like every other Aisle server.
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.session.timeZone": "UTC",
        # Timestamps as UTC instants in microseconds, as dbt's session writes them (not INT96).
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.warehouse.dir": str(folder / "warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={folder / 'derby'} -Duser.timezone=UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session (started on first use with `spark_conf`, then shared)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise SparkUnavailable(
            "AISLE_ENGINE=spark needs pyspark: install the extra with `pip install -e .[spark]`"
        ) from error
    if not os.environ.get("JAVA_HOME") and not _java_on_path():
        raise SparkUnavailable("Spark needs Java 17 on PATH or JAVA_HOME (none found)")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings.spark_dir.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _java_on_path() -> bool:
    from shutil import which

    return which("java") is not None
