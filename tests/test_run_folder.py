import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.pipeline.run_folder import RunFolder, abandon_unfinished, prune, swap_link
from scoring.settings import ROOT


def test_stages_are_timed_and_failures_recorded(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, {"top_n": 5})
    with run.stage("ok") as record:
        record["rows"] = 3
    with pytest.raises(ValueError), run.stage("broken"):
        raise ValueError("boom")
    manifest = json.loads((run.root / "manifest.json").read_text())
    assert manifest["stages"]["ok"]["rows"] == 3 and manifest["stages"]["ok"]["seconds"] >= 0
    assert manifest["stages"]["broken"]["status"] == "failed"
    assert manifest["status"] == "failed in broken"
    assert manifest["settings"] == {"top_n": 5} and "torch" in manifest["versions"]
    assert not (tmp_path / "current").exists()  # a failed run is never promoted


def test_promote_moves_current_to_the_newest_successful_run(tmp_path: Path) -> None:
    first = RunFolder(root=tmp_path / "a", run_id="a")
    first.root.mkdir()
    first.promote(tmp_path)
    assert (tmp_path / "current").resolve() == first.root.resolve()
    second = RunFolder(root=tmp_path / "b", run_id="b")
    second.root.mkdir()
    second.promote(tmp_path)
    assert (tmp_path / "current").resolve() == second.root.resolve()
    assert json.loads((second.root / "manifest.json").read_text())["status"] == "succeeded"
    assert not list(tmp_path.glob(".current-*"))


KILLED_IN_FINETUNE = """
import os, signal, sys
from pathlib import Path
from scoring.pipeline.run_folder import RunFolder
run = RunFolder.create(Path(sys.argv[1]), {})
with run.stage("training_pairs"):
    pass
with run.stage("finetune"):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_killed_midway_is_marked_abandoned_in_its_stage(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_IN_FINETUNE, str(tmp_path)], cwd=ROOT, check=False)
    assert result.returncode == -signal.SIGKILL
    (killed,) = [p.parent for p in tmp_path.glob("*/manifest.json")]
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    finished = RunFolder.create(tmp_path, {})
    finished.promote(tmp_path)
    assert abandon_unfinished(tmp_path) == [killed.name]
    manifest = json.loads((killed / "manifest.json").read_text())
    assert (manifest["status"], manifest["abandoned_in"]) == ("abandoned", "finetune")
    assert json.loads((finished.root / "manifest.json").read_text())["status"] == "succeeded"
    assert abandon_unfinished(tmp_path) == []  # once only


def test_retention_keeps_the_newest_runs_and_always_the_current_one(tmp_path: Path) -> None:
    names = [f"2026110{day}T000000-1" for day in range(1, 8)]
    for name in names:
        (tmp_path / name).mkdir()
    swap_link(tmp_path / "current", tmp_path / names[0])  # an old run is still current
    deleted = prune(tmp_path, keep=3, protect=tmp_path / "current")
    assert deleted == names[1:4]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == [names[0], *names[4:]]
    assert (tmp_path / "current").resolve() == (tmp_path / names[0]).resolve()
