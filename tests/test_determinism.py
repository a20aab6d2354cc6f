"""A scoring run is a function of its workspace and settings. First the one order every list is cut in
(retrieval/ordering.py) on small arrays; then the nightly job, run twice on copies of the tiny
workspace, each time in a new process with another hash seed, writes the same files.

A new process is what `make score` is, and a hash seed is the usual way a process's own state leaks
into a result (a set or dict of strings iterated in its order). Compared: every file of the two run
folders (Parquet by content and row order, NumPy arrays exactly, everything else byte for byte) but
the timings (manifest.json, and fine-tuning's seconds), and the published files but their run ids.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrieval import ordering
from scoring.settings import ROOT, Settings

SCORE = """
import json, sys
from pathlib import Path
from scoring.pipeline.run_folder import RunFolder
from scoring.pipeline.stages import score_run
from scoring.settings import Settings

settings = Settings(**json.loads(Path(sys.argv[1]).read_text()))
run = RunFolder.create(settings.runs_dir, settings.model_dump(mode="json"))
score_run(settings, run)
print(run.root)
"""
# Files that record when and how long: the manifest (run id, start, each stage's seconds) is left out,
# fine-tuning's metrics are compared without their timings.
UNCOMPARED = "manifest.json"
TIMED = {"model/finetune_metrics.json": ("seconds", "pairs_per_second")}


def test_lists_compare_scores_at_a_fixed_precision_then_the_item_id() -> None:
    noise = 10.0 ** -(ordering.SCORE_DECIMALS + 2)  # below the precision: float noise, not a preference
    frame = pd.DataFrame(
        {
            "user_id": ["v", "u", "u", "u", "u"],
            "item_id": ["a", "b", "a", "c", "d"],
            "score": [0.1, 0.5 + noise, 0.5, 0.9, np.nan],
        },
        index=[10, 11, 12, 13, 14],
    )
    best_first = ordering.ordered(frame, by="user_id")
    assert best_first["item_id"].tolist() == ["c", "a", "b", "d", "a"]
    assert best_first.index.tolist() == [13, 12, 11, 14, 10]  # the frame's index, to align with it


def test_a_top_k_cut_through_a_tie_keeps_the_smaller_positions() -> None:
    noise = 10.0 ** -(ordering.SCORE_DECIMALS + 2)
    scores = np.array([[0.5, 0.7, 0.5 + noise, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    positions, values = ordering.top_k_rows(scores, 3)
    assert positions.tolist() == [[1, 0, 2], [0, 1, 2]]
    np.testing.assert_array_equal(values, np.take_along_axis(scores, positions, axis=1))


def _scored_copy(workspace: Settings, folder: Path, hash_seed: str) -> tuple[Settings, Path]:
    """A copy of the built workspace (without its runs), scored by a new process with `hash_seed`;
    returns the copy's settings and its run folder."""
    data_dir = folder / "data"
    shutil.copytree(
        workspace.data_dir, data_dir, symlinks=True, ignore=shutil.ignore_patterns("aisle.lock", "runs")
    )
    settings = Settings(**{**workspace.model_dump(), "data_dir": data_dir})
    values = {k: v for k, v in settings.model_dump(mode="json").items() if k != "serve_token"}
    (folder / "settings.json").write_text(json.dumps(values))
    result = subprocess.run(
        [sys.executable, "-c", SCORE, str(folder / "settings.json")],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return settings, Path(result.stdout.strip().splitlines()[-1])


def _untimed(record: object, timed: tuple[str, ...]) -> object:
    """A JSON record without its timing keys, at any depth (each way of fine-tuning times itself)."""
    if isinstance(record, dict):
        return {k: _untimed(v, timed) for k, v in record.items() if k not in timed}
    return record


def _differs(ours: Path, theirs: Path, name: str) -> str | None:
    """Why two runs' files of the same name differ, or None when they are the same."""
    if ours.suffix == ".parquet":
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(ours), pd.read_parquet(theirs), check_exact=True)
        except AssertionError as error:
            return str(error).splitlines()[0]
        return None
    if ours.suffix == ".npy":
        return None if np.array_equal(np.load(ours), np.load(theirs)) else "other values"
    if name in TIMED:
        a, b = (_untimed(json.loads(p.read_text()), TIMED[name]) for p in (ours, theirs))
        return None if a == b else "other values"
    return None if ours.read_bytes() == theirs.read_bytes() else "other bytes"


@pytest.mark.e2e  # the whole nightly job, twice, each in its own process
def test_two_processes_with_other_hash_seeds_write_the_same_run(workspace: Settings, tmp_path: Path) -> None:
    (first, first_run), (second, second_run) = (
        _scored_copy(workspace, tmp_path / name, seed) for name, seed in (("a", "1"), ("b", "2"))
    )
    names = [
        sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
        for run in (first_run, second_run)
    ]
    assert names[0] == names[1]
    assert "recommendations.parquet" in names[0]
    differing = {
        name: why
        for name in names[0]
        if name != UNCOMPARED and (why := _differs(first_run / name, second_run / name, name))
    }
    assert not differing, differing

    for path in sorted(first.published_dir.glob("*.parquet")):
        ours = pd.read_parquet(path).drop(columns="run_id", errors="ignore")
        theirs = pd.read_parquet(second.published_dir / path.name).drop(columns="run_id", errors="ignore")
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=path.name)
