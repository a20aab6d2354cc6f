"""One run per workspace: a second run is refused with who holds the workspace, without a traceback,
and the lock of a process that was killed is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.pipeline.lock import RunInProgress, workspace_lock
from scoring.settings import ROOT

pytestmark = pytest.mark.integration  # other processes: a lock holder, the aisle command line

HOLD = """
import sys, time
from pathlib import Path
from scoring.pipeline.lock import workspace_lock
with workspace_lock(Path(sys.argv[1]), "aisle score"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path):
    """Another process holding the workspace's lock, as a running `make score` would."""
    command = [sys.executable, "-c", HOLD, str(tmp_path / "aisle.lock")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_second_run_is_refused_with_the_holder_named(tmp_path: Path, holder: subprocess.Popen) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scoring", "score"],
        cwd=ROOT,
        env={**os.environ, "AISLE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "a run is in progress" in result.stderr and f"pid {holder.pid}" in result.stderr
    assert "since 20" in result.stderr and "aisle score" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "builds").exists()  # it touched nothing


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path: Path, holder: subprocess.Popen, capsys) -> None:
    with pytest.raises(RunInProgress), workspace_lock(tmp_path / "aisle.lock", "aisle features"):
        pass
    holder.kill()  # SIGKILL: no chance to clean up; the kernel drops the flock, the record stays
    holder.wait()
    lock = tmp_path / "aisle.lock"
    with workspace_lock(lock, "aisle features"), workspace_lock(lock, "nested"):  # re-entrant in a process
        pass
    assert f"stale lock of pid {holder.pid}" in capsys.readouterr().err
    with workspace_lock(tmp_path / "aisle.lock", "aisle score"):  # released cleanly: nothing stale now
        pass
    assert "stale" not in capsys.readouterr().err
