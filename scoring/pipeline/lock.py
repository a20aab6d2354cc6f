"""One run per workspace at a time: an exclusive lock on `data/aisle.lock`.

Overlapping runs would rebuild the warehouse under each other, so every command that writes to a
workspace holds this lock. It is an OS file lock (`flock`), which the kernel drops when its process
dies, however it dies; the file also records who holds it, so a second run can say who is in its way,
and a run that finds the record of a process that no longer runs says that it takes the lock over.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from scoring.errors import AisleError

_held: set[Path] = set()


class RunInProgress(AisleError):
    """Another process holds the workspace's lock."""


def _holder(text: str) -> dict:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}


@contextmanager
def workspace_lock(lock_path: Path, command: str) -> Iterator[None]:
    """Hold the workspace's lock for `command`, or raise RunInProgress naming the holder.

    Re-entrant within one process, so a command may call another that also takes the lock.
    """
    lock_path = lock_path.absolute()
    if lock_path in _held:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            raise RunInProgress(
                f"a run is in progress in {lock_path.parent} since {holder.get('started_at', '?')}, "
                f"pid {holder.get('pid', '?')} ({holder.get('command', '?')}); wait for it to finish "
                f"(lock: {lock_path})"
            ) from None
        stale = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if stale.get("pid"):
            Console(stderr=True).print(
                f"[yellow]Taking over the stale lock of pid {stale['pid']} ({stale.get('command', '?')}, "
                f"started {stale.get('started_at', '?')}), which no longer runs."
            )
        record = {"pid": os.getpid(), "started_at": datetime.now(UTC).isoformat(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        _held.add(lock_path)
        try:
            yield
        finally:
            _held.discard(lock_path)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
