import json
from pathlib import Path

import pytest

from scoring.run_folder import RunFolder


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
