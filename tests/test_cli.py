"""What a person at the terminal sees: a known failure is one message that names the file and the rule,
with exit status 1 and no traceback, and a normal Feast read or ALS fit prints no library warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.settings import ROOT, Settings

pytestmark = pytest.mark.integration  # the aisle command line in its own process


def _aisle(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scoring", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_broken_contract_is_one_message_without_a_traceback(tmp_path: Path) -> None:
    env = {"AISLE_DATA_DIR": str(tmp_path), "AISLE_SOURCE": "files", "AISLE_RAW_PATH": str(tmp_path / "no")}
    result = _aisle("features", env=env)
    assert result.returncode == 1
    assert "events.parquet" in result.stderr and "rule" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "builds").exists()


QUIET = """
import numpy as np, pandas as pd, scipy.sparse as sp
from retrieval.candidates import als_factors
from scoring.features import feature_store
from scoring.settings import Settings
settings = Settings()
users = pd.read_parquet(settings.marts_dir / "fct_user_stats.parquet").head(5)
feature_store.historical(settings, users[["user_id", "event_timestamp"]], ["user_stats:orders_count"])
counts = sp.random(40, 30, density=0.2, format="csr", random_state=1)
als_factors(counts, factors=4, seed=1)
print("done")
"""


def test_feast_reads_and_als_print_no_library_warnings(workspace: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # as a user's shell has it
    env.update(workspace.environ())
    env["AISLE_DATA_DIR"] = str(workspace.data_dir)
    result = subprocess.run(
        [sys.executable, "-c", QUIET], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("done")
    assert "DeprecationWarning" not in result.stderr and "OpenBLAS" not in result.stderr, result.stderr
