"""How new raw data arrives: an initial file per table plus one dated drop per day.

A canonical table's raw data in the raw folder is an optional initial file `<table>.<ext>` plus dated
drops `<table>-YYYY-MM-DD.<ext>` (ext parquet or csv). dbt reads them all together (the shop source's
glob) in arrival order: the initial file first, then the drops by date, rows in file order. That order is
what numbers exact duplicate rows (the `occurrence` in each row's `row_key`), so a row has the same
identity whether its file was loaded in a full build or by an incremental `dbt build` the day it arrived.

Online Retail arrives the same way: its published file is the initial file and a day's invoice lines are
a drop (`online_retail-YYYY-MM-DD.csv.gz`); `cut_by_day` simulates that by cutting the published file.

Drops that have not arrived yet wait in `_pending/` under the raw folder (dbt never reads it);
`release_next_day` moves the earliest pending day into the raw folder, as a nightly transfer would.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from scoring.errors import AisleError

# The table name of Online Retail's invoice lines in a folder of arrivals (the published file's name).
ONLINE_RETAIL_TABLE = "online_retail"
PENDING = "_pending"
# `<table>-YYYY-MM-DD.<ext>`: a dated drop (the date is the day it arrived, see _days); the server's
# sealed events are drops too, several a day: `events-YYYY-MM-DD.served-<first>-<last>.<ext>`
# (scoring/events/log.py), after that day's drop in arrival order.
_DROP = re.compile(
    r"^(?P<table>.+)-(?P<day>\d{4}-\d{2}-\d{2})(?:\.served-\d+-\d+)?\.(?P<ext>parquet|csv|csv\.gz)$"
)


def _extension(fmt: str) -> str:
    if fmt not in ("parquet", "csv", "csv.gz"):
        raise ValueError(f"unknown raw format {fmt!r}: parquet, csv or csv.gz")
    return fmt


def initial_path(raw_dir: Path, table: str, fmt: str) -> Path:
    """The table's initial file: everything that was there before the first drop."""
    return raw_dir / f"{table}.{_extension(fmt)}"


def drop_path(raw_dir: Path, table: str, day: dt.date, fmt: str) -> Path:
    """The file of one day's drop of a table."""
    return raw_dir / f"{table}-{day.isoformat()}.{_extension(fmt)}"


def drop_day(path: Path) -> dt.date | None:
    """The day of a dated drop, None for an initial file (or any other name)."""
    found = _DROP.match(path.name)
    return dt.date.fromisoformat(found["day"]) if found else None


def arrival_files(raw_dir: Path, table: str, fmt: str) -> list[Path]:
    """The files of a table in arrival order: the initial file (if any), then the drops by date."""
    drops = sorted(
        (
            p
            for p in raw_dir.glob(f"{table}-*.{_extension(fmt)}")
            if (m := _DROP.match(p.name)) and m["table"] == table
        ),
        key=lambda p: p.name,
    )
    initial = initial_path(raw_dir, table, fmt)
    return ([initial] if initial.exists() else []) + drops


def pending_dir(raw_dir: Path) -> Path:
    """Drops waiting to arrive; dbt never reads this folder (its globs do not descend into it)."""
    return raw_dir / PENDING


def _write(frame: pd.DataFrame, path: Path) -> None:
    """Write rows in their order, as the format's plain file (no index, no varying metadata)."""
    write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def write_table(table: pa.Table, path: Path) -> None:
    """Write a table as the plain file its name's extension says (parquet, csv or csv.gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".parquet"):
        pq.write_table(table, path, compression="zstd")
    elif path.name.endswith(".csv.gz"):
        with pa.CompressedOutputStream(str(path), "gzip") as out:
            pacsv.write_csv(table, out)
    else:
        pacsv.write_csv(table, path)


def _days(frame: pd.DataFrame, time_column: str, last_day: dt.date | None) -> pd.Series:
    """The day each row arrives on, in file order: its time's day, never earlier than the row before.

    A row whose time does not parse, or lies after `last_day` (a defect such as a time years ahead), says
    nothing about when it was sent, so it arrives with the row before it (a leading one with the first
    day). A day never goes back (a row written after a later day's rows arrives with them, as a late
    row does), so the files read in arrival order are exactly the frame's rows in order, and exact
    duplicates are numbered the same way as in the whole file.
    """
    parsed = pd.to_datetime(frame[time_column], errors="coerce", format="ISO8601").dt.normalize()
    if last_day is not None:
        parsed = parsed.where(parsed <= pd.Timestamp(last_day))
    return parsed.ffill().bfill().cummax()


def split_by_day(
    frame: pd.DataFrame,
    time_column: str,
    out_dir: Path,
    table: str,
    fmt: str,
    first_drop_day: dt.date,
    last_day: dt.date | None = None,
) -> list[Path]:
    """Write a table as it would have arrived: rows arriving before `first_drop_day` to `<table>.<ext>`,
    each later day's rows to that day's drop (arrival days: see _days; times after `last_day` are
    defects). Rows keep their order within each file, and the files in arrival order hold the frame's
    rows in order. Returns the files written, in arrival order."""
    days = _days(frame, time_column, last_day)
    in_base = (days < pd.Timestamp(first_drop_day)).to_numpy()
    written = []
    if in_base.any():
        path = initial_path(out_dir, table, fmt)
        _write(frame[in_base], path)
        written.append(path)
    later = frame[~in_base]
    for day, rows in later.groupby(days[~in_base].to_numpy(), sort=True):
        path = drop_path(out_dir, table, pd.Timestamp(day).date(), fmt)
        _write(rows, path)
        written.append(path)
    return written


def cut_by_day(source: Path, out_dir: Path, drop_days: int, *, pending: bool = False) -> list[Path]:
    """Simulate Online Retail arriving day by day: the published file's last `drop_days` days of
    invoices become dated drops in `out_dir` (`online_retail-YYYY-MM-DD.csv.gz`), everything before
    them the initial file `online_retail.csv.gz`. Point AISLE_RAW_PATH (settings.raw_path) at
    `out_dir` to read them together. Every value stays the published text. With `pending`, the drops
    wait in `pending_dir(out_dir)` for `release_next_day`. Returns the files in arrival order."""
    if drop_days < 1:
        raise ValueError("drop_days must be at least 1")
    # Only an empty field is missing (read back as null, as DuckDB reads the published file).
    frame = pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
    days = _days(frame, "InvoiceDate", None)
    last_days = sorted(days.unique())[-drop_days:]
    written = split_by_day(
        frame, "InvoiceDate", out_dir, ONLINE_RETAIL_TABLE, "csv.gz", pd.Timestamp(last_days[0]).date()
    )
    if not pending:
        return written
    pending_dir(out_dir).mkdir(exist_ok=True)
    return [p if drop_day(p) is None else p.rename(pending_dir(out_dir) / p.name) for p in written]


def release_next_day(raw_dir: Path) -> list[Path]:
    """Move the earliest pending day's drops of every table into the raw folder, as that day's nightly
    transfer; returns the arrived files. A drop already in the raw folder is never overwritten (it
    would change rows already loaded). Raises AisleError when nothing is pending."""
    pending = pending_dir(raw_dir)
    waiting = sorted(p for p in pending.glob("*") if p.is_file() and drop_day(p)) if pending.exists() else []
    if not waiting:
        raise AisleError(f"no pending days in {pending}: every drop has arrived")
    day = min(drop_day(p) for p in waiting)
    arrived = []
    for path in (p for p in waiting if drop_day(p) == day):
        target = raw_dir / path.name
        if target.exists():
            raise AisleError(f"{target} has already arrived; remove the pending copy {path} to go on")
        path.rename(target)
        arrived.append(target)
    return arrived
