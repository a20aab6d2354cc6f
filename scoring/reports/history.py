"""The run history: one JSON line per finished run (promoted or refused) in data/runs/history.jsonl.

Why a file beside the run folders: `keep_runs` prunes old run folders (they are 90-100 MB each), and the
runs page must still show how quality moved across every run. A line holds what the page needs, copied
from the manifest: status, times, the ranker's holdout figures, the gate's record and the monitor's (the
monitor's profile too, so a later run can still measure drift against a pruned run). Lines are only ever
appended, each in one write, so a reader never sees a half-written history; a line torn by a crash is
skipped when read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scoring.settings import Settings


def path(settings: Settings) -> Path:
    return settings.runs_dir / "history.jsonl"


def entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """The history line of one run: what the runs page shows, from its manifest."""
    stages = manifest.get("stages", {})

    def record(name: str) -> dict[str, Any]:
        return {k: v for k, v in stages.get(name, {}).items() if k != "seconds"}

    return {
        "run_id": manifest["run_id"],
        "status": manifest.get("status"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "as_of": stages.get("training_pairs", {}).get("as_of"),
        "holdout": stages.get("rank", {}).get("holdout", {}),
        "encoder": {
            "shipped": stages.get("finetune", {}).get("encoder", {}).get("shipped"),
            "held_out": stages.get("finetune", {}).get("held_out", {}),
        },
        "gate": record("gate"),
        "monitor": record("monitor"),
        "stage_seconds": {name: stage.get("seconds") for name, stage in stages.items()},
    }


def append(settings: Settings, manifest: dict[str, Any]) -> Path:
    """Append the run's line to the history (one write, flushed to disk). Returns the history's path."""
    target = path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry(manifest), default=str) + "\n"
    with target.open("a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return target


def read(settings: Settings) -> list[dict[str, Any]]:
    """Every run in the history, oldest first; a run appended twice keeps its last line."""
    target = path(settings)
    if not target.exists():
        return []
    runs: dict[str, dict[str, Any]] = {}
    for line in target.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a crash mid-write
            continue
        runs[item["run_id"]] = item
    return [runs[key] for key in sorted(runs)]
