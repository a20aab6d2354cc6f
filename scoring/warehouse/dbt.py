"""Run dbt on the workspace: the one way Aisle builds the warehouse and the marts.

dbt runs with the environment of the one settings object, so `make score` and a data engineer's
`dbt build` build the same thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scoring.errors import AisleError
from scoring.settings import DBT_DIR, Settings


class DbtBuildError(AisleError):
    """dbt build failed; the message names the failing models and tests."""


def run(settings: Settings, *args: str) -> None:
    """Run one dbt command (e.g. "build") in the project with this workspace's environment.

    dbt runs as its own process, as a data engineer would run it, so it holds the warehouse's write
    lock only while it runs.
    """
    executable = str(Path(sys.executable).with_name("dbt"))
    target = settings.dbt_target_dir
    # The profile's `spark` output (dbt-spark's session method) when the engine is Spark; DuckDB's is the
    # default target.
    engine = ["--target", "spark"] if settings.engine == "spark" else []
    command = [
        executable,
        *args,
        *engine,
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(target.absolute()),
        "--log-path",
        str((target / "logs").absolute()),
    ]
    settings.marts_dir.mkdir(parents=True, exist_ok=True)  # dbt-duckdb writes external marts there
    env = {**os.environ, **settings.environ()}
    if settings.engine == "spark":
        settings.spark_dir.mkdir(parents=True, exist_ok=True)  # the session's metastore and warehouse
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # dbt's Spark driver stays on loopback
    result = subprocess.run(command, env=env, cwd=DBT_DIR, check=False)
    if result.returncode != 0:
        raise DbtBuildError(
            f"dbt {' '.join(args)} failed (exit {result.returncode}); the failing models and tests are "
            f"listed above and in {target / 'run_results.json'}"
        )
