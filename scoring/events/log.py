"""The event log: every event `POST /events` accepts, on disk and synced before the answer, until a build
turns it into raw data.

Why SQLite (one file, `settings.event_log_path`), not a text file of JSON lines:

- **Durable before 200.** WAL mode with `synchronous=FULL` syncs the log to disk at every commit, and the
  route answers only after its commit returned.
- **Atomic, never torn.** A commit is all or nothing, also when the process is killed mid-write (`kill -9`):
  the next open rolls an unfinished transaction back. A killed appender of a text file can leave half a line.
- **One writer at a time, across processes.** `BEGIN IMMEDIATE` takes the database's write lock, so the
  server's workers (and a build replaying events) serialise on it. The session merge runs inside the
  same transaction (`record`), which makes the read-modify-write of a session atomic per user without a
  second lock; `/recommend` and the lookups never take it, so reads stay as fast as before.
- **Idempotent.** `event_id` is the table's unique key: a retried event (Segment's `messageId` pattern)
  finds its row and is stored once.

Raw data: a build's first step (scoring/ingest/prepare.py) calls `seal`, which writes every event not yet
sealed to the raw folder as a drop under the raw events contract,
`events-YYYY-MM-DD.served-<first>-<last>.<ext>`: the day it was sealed and the first and last sequence
numbers; every value text, with the `event_id` column beside the contract's. It is written aside and
renamed in place. The file names themselves say what is sealed (the highest `<last>`), so a seal killed
before its rename is simply done again, and no event is sealed twice. dbt then reads the drop like any
other: the same rules, quarantine, PII handling and row conservation.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa

from scoring.errors import AisleError
from scoring.events.session import Event
from scoring.ingest import arrivals

T = TypeVar("T")
# The raw events contract's columns a served event fills (scoring/ingest/raw_contract.py), after its id.
COLUMNS = ("event_id", "user_id", "item_id", "event_type", "event_at", "quantity", "unit_price", "order_id")
SCHEMA = f"""
create table if not exists events (
    seq integer primary key autoincrement,
    {", ".join(f"{c} text" for c in COLUMNS)},
    received_at text not null,
    unique (event_id)
)
"""
SERVED = re.compile(r"^events-\d{4}-\d{2}-\d{2}\.served-(?P<first>\d{12})-(?P<last>\d{12})\.")


class EventConflict(AisleError):
    """An event_id that is already stored with other values: a client bug, not a retry."""


@dataclass(frozen=True)
class Receipt:
    """What was stored: the event's id, its place in the log, and whether it was there already."""

    event_id: str
    seq: int
    duplicate: bool


def sealed_through(raw_dir: Path) -> int:
    """The last sequence number already sealed into `raw_dir` (0: none)."""
    found = (SERVED.match(path.name) for path in raw_dir.glob("events-*.served-*"))
    return max((int(m["last"]) for m in found if m), default=0)


class EventLog:
    """The log at one path. One connection per process (a server worker opens its own after the fork)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None
        self._queue = -1  # the file descriptor writers flock (exclusive)
        self._mutex = threading.Lock()
        self._pid = 0

    def _connect(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            con.execute("pragma journal_mode=wal")
            con.execute("pragma synchronous=full")
            con.execute(SCHEMA)
            queue = self.path.with_name(f"{self.path.name}.lock")
            self._queue = os.open(queue, os.O_RDWR | os.O_CREAT, 0o600)
            self._con, self._pid, self._mutex = con, os.getpid(), threading.Lock()
        return self._con

    def close(self) -> None:
        if self._con is not None and self._pid == os.getpid():
            self._con.close()
            os.close(self._queue)
        self._con = None

    @contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """The log's write lock, held for the block: no event is stored, nor any session merged, meanwhile.
        Committed when the block ends, rolled back when it raises.

        Writers queue on an OS lock (`flock` on a file beside the log, and a mutex for threads of one
        process) before SQLite's own: a waiter then wakes the moment the lock is free, where SQLite's busy
        handler polls with sleeps of up to 100 ms, which under 16 clients put 250 ms into the p99 of
        `POST /events`. `BEGIN IMMEDIATE` stays, so a writer that skips the queue is still serialised.
        """
        con = self._connect()
        with self._mutex:
            fcntl.flock(self._queue, fcntl.LOCK_EX)
            try:
                con.execute("begin immediate")
                try:
                    yield con
                except BaseException:
                    con.execute("rollback")
                    raise
                con.execute("commit")
            finally:
                fcntl.flock(self._queue, fcntl.LOCK_UN)

    def record(self, event: Event, merge: Callable[[], T]) -> tuple[Receipt, T]:
        """Store `event` once and run `merge` (its session merge) in the same write transaction.

        A new event is appended; an `event_id` already stored with the same values is a retry and is not
        stored again (its merge runs again, which changes nothing); with other values it is an
        EventConflict. If `merge` raises, nothing is stored. Returns once the commit is on disk.
        """
        event_id = event.event_id or uuid.uuid4().hex
        row = event.raw_row(event_id)
        with self.exclusive() as con:
            stored = con.execute(
                f"select seq, {', '.join(COLUMNS)} from events where event_id = ?", (event_id,)
            ).fetchone()
            if stored is not None and dict(zip(COLUMNS, stored[1:], strict=True)) != row:
                raise EventConflict(
                    f"event_id {event_id!r} is already stored (log sequence {stored[0]}) with other values: "
                    "an event_id names one event; send a new one for a new event"
                )
            if stored is None:
                seq = con.execute(
                    f"insert into events ({', '.join(COLUMNS)}, received_at) "
                    f"values ({', '.join('?' * (len(COLUMNS) + 1))})",
                    (*row.values(), dt.datetime.now(dt.UTC).isoformat()),
                ).lastrowid
            else:
                seq = stored[0]
            result = merge()
        assert seq is not None
        return Receipt(event_id, int(seq), stored is not None), result

    def rows_after(self, seq: int) -> pd.DataFrame:
        """Every stored event after sequence number `seq`, in order, as raw rows (and their `seq`)."""
        con = self._connect()
        rows = con.execute(
            f"select seq, {', '.join(COLUMNS)} from events where seq > ? order by seq", (seq,)
        ).fetchall()
        return pd.DataFrame(rows, columns=["seq", *COLUMNS], dtype=object)

    def count(self) -> int:
        """How many events the log holds."""
        return int(self._connect().execute("select count(*) from events").fetchone()[0])

    def seal(self, raw_dir: Path, fmt: str, day: dt.date) -> Path | None:
        """Write the events not sealed yet into `raw_dir` as one drop of the raw events contract (module
        docstring); None when there are none. The file is complete before it has its name."""
        if not self.path.exists():
            return None
        rows = self.rows_after(sealed_through(raw_dir))
        if rows.empty:
            return None
        first, last = int(rows["seq"].iloc[0]), int(rows["seq"].iloc[-1])
        path = raw_dir / f"events-{day.isoformat()}.served-{first:012d}-{last:012d}.{fmt}"
        aside = raw_dir / f".{path.name}"  # hidden: outside every raw glob until renamed
        arrivals.write_table(pa.table({c: pa.array(rows[c].tolist(), pa.string()) for c in COLUMNS}), aside)
        with aside.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(aside, path)
        directory = os.open(raw_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return path

    def unsealed(self, raw_dir: Path) -> list[Event]:
        """The stored events `raw_dir` does not hold yet: what the next seal will write."""
        if not self.path.exists():
            return []
        return [Event.from_raw(row) for row in self.rows_after(sealed_through(raw_dir)).to_dict("records")]
