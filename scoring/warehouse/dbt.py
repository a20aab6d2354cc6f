"""Run dbt on the workspace: the one way Aisle builds the warehouse and the marts.

dbt runs with the environment of the one settings object, so `make score` and a data engineer's
`dbt build` build the same thing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from scoring.errors import AisleError
from scoring.settings import DBT_DIR, Settings

# What a dbt build's SQL is made of: two builds with the same files and versions run the same SQL.
PROJECT_FILES = ("dbt_project.yml", "models", "macros", "seeds", "tests")
NO_UNIT_TESTS = ("--exclude-resource-type", "unit_test")


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


def project_digest(engine: str) -> str:
    """A digest of the dbt project's files, the engine and dbt's and its adapter's versions.

    A SQL unit test reads fixed fixtures, never the warehouse's data, so it passes or fails with the
    project's code alone: a build whose digest equals one that already ran the unit tests need not run
    them again (an update between two nightly builds, scoring/pipeline/build.py).
    """
    digest = hashlib.sha256(f"{engine}\n".encode())
    for package in ("dbt-core", f"dbt-{engine}"):
        digest.update(f"{package}=={version(package)}\n".encode())
    for part in PROJECT_FILES:
        path = DBT_DIR / part
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.relative_to(DBT_DIR).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]
