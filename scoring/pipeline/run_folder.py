"""One folder per scoring run, holding every stage's files and a JSON manifest.

Stages read and write files here (Parquet, .npy, FAISS index, checkpoints), so any stage can run alone,
for example fine-tuning on a GPU host from the Parquet inputs. A run becomes "current" only after every
stage and check passed: `promote()` swaps the `current` link atomically. The same link swap and the
same retention serve the warehouse builds (`data/live`, `data/builds`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from scoring.errors import AisleError

VERSIONED_PACKAGES = (
    "torch",
    "sentence-transformers",
    "transformers",
    "faiss-cpu",
    "feast",
    "dbt-core",
    "duckdb",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def swap_link(link: Path, target: Path) -> None:
    """Point `link` at `target` (a sibling folder) atomically: a new link renamed over the old one, so
    a reader sees the old folder or the new one, never neither."""
    tmp = link.with_name(f".{link.name}-{target.name}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


def promoted_other_than(runs_dir: Path, run: Path) -> Path | None:
    """The promoted run's folder (runs/current, resolved), or None when no run was promoted or the promoted
    run is `run` itself (a stage rerun in its own folder compares with, and reuses, nothing)."""
    current = runs_dir / "current"
    if not current.exists() or current.resolve() == run.resolve():
        return None
    return current.resolve()


def prune(parent: Path, keep: int, protect: Path) -> list[str]:
    """Delete all but the newest `keep` folders of `parent` (names sort by time), never `protect`.

    Returns the names deleted. Run folders are 90-100 MB each, so without this a nightly job fills the disk.
    """
    if not parent.is_dir():
        return []
    folders = sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0] != ".")
    protected = protect.resolve() if protect.exists() else None
    doomed = [p for p in folders[:-keep] if p.resolve() != protected] if keep < len(folders) else []
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return [p.name for p in doomed]


def abandon_unfinished(runs_dir: Path) -> list[str]:
    """Mark as `abandoned` every run whose manifest still says `running`, naming the stage it died in.

    Called with the workspace lock held, so no run can still be going: a manifest that says `running`
    belongs to a process that was killed (kill -9, out of memory, a reboot) before it could say so.
    """
    abandoned = []
    for manifest_path in sorted(runs_dir.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("status") != "running":
            continue
        manifest["status"] = "abandoned"
        manifest["abandoned_in"] = manifest.get("stage", "before its first stage")
        manifest["abandoned_noticed_at"] = datetime.now(UTC).isoformat()
        tmp = manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, manifest_path)
        abandoned.append(manifest_path.parent.name)
    return abandoned


@dataclass
class RunFolder:
    """A run's folder and manifest; `stage()` times each stage and records its counts."""

    root: Path
    run_id: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, runs_dir: Path, settings: dict[str, Any]) -> RunFolder:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        root = runs_dir / run_id
        root.mkdir(parents=True, exist_ok=False)
        run = cls(root=root, run_id=run_id)
        run.manifest = {
            "run_id": run_id,
            "started_at": datetime.now(UTC).isoformat(),
            "status": "running",
            "settings": settings,
            "versions": package_versions(),
            "stages": {},
        }
        run.save()
        return run

    @classmethod
    def open(cls, root: Path) -> RunFolder:
        """An existing run folder, to rerun one of its stages."""
        manifest_path = root / "manifest.json"
        if not manifest_path.exists():
            raise AisleError(f"{root} is not a run folder: it has no manifest.json")
        manifest = json.loads(manifest_path.read_text())
        return cls(root=root.resolve(), run_id=manifest["run_id"], manifest=manifest)

    def path(self, name: str) -> Path:
        return self.root / name

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage; the caller fills the yielded dict with counts and metrics."""
        record: dict[str, Any] = {}
        start = time.perf_counter()
        self.manifest["stage"] = name
        self.save()
        try:
            yield record
        except BaseException:
            self.manifest["stages"][name] = {**record, "status": "failed"}
            self.manifest["status"] = f"failed in {name}"
            self.save()
            raise
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.manifest["stages"][name] = record
        self.manifest["peak_rss_mb"] = round(peak_rss_mb(), 1)
        self.save()

    def save(self) -> None:
        tmp = self.root / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        os.replace(tmp, self.root / "manifest.json")

    def promote(self, runs_dir: Path) -> None:
        """Point runs/current at this run, atomically (a symlink swapped by rename)."""
        self.manifest["status"] = "succeeded"
        self.manifest["finished_at"] = datetime.now(UTC).isoformat()
        self.save()
        swap_link(runs_dir / "current", self.root)
