"""Check raw files against the canonical contract before dbt reads them.

A value that breaks a rule is quarantined row by row in dbt, so nothing is lost; but a file dbt cannot
read at all (a missing required column, an unbalanced quote, ragged rows, mixed line endings, a byte that
is not UTF-8, a header with no rows under it) would otherwise fail deep inside a model with a message
about something else. This check fails first, with one message that names the file, the line and the
rule. CSV files are checked in one streaming pass (Python's csv module over the decoded lines), so the
check stays fast on large files.

The contract (README, "Use your own data"): only `events` is a required file; `items`, `users` and
`searches` (the search log) are optional. In `events`, `country` and `title` are optional columns; in
`items` only `item_id` and `title` are required; in `users` only `user_id`; in `searches` every column but
`position` (an empty user_id is an anonymous search, an empty item_id a search with no action). dbt
reads a missing optional column as null and a missing optional table as no rows (macro raw_layout in
dbt_project/macros/raw_rows.sql). New data arrives as dated drops beside each table's initial file
(`<table>-YYYY-MM-DD.<ext>`, scoring/ingest/arrivals.py); every one of them is checked the same way.
"""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from scoring.errors import AisleError
from scoring.ingest import arrivals
from scoring.settings import Settings

# Every column of each canonical table, in the order the demo shop writes them.
CONTRACT: dict[str, tuple[str, ...]] = {
    "events": (
        "user_id",
        "item_id",
        "event_type",
        "event_at",
        "quantity",
        "unit_price",
        "order_id",
        "country",
    ),
    "items": ("item_id", "title", "description", "category", "brand", "price"),
    "users": ("user_id", "email", "phone", "full_name", "country", "signed_up_at"),
    "searches": ("search_id", "user_id", "query", "searched_at", "item_id", "action", "position"),
}
# Optional columns beyond those: an event's item title, which names the item where there is no items file.
EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {"events": ("title",), "items": (), "users": (), "searches": ()}
# The columns a file of each table must have. quantity, unit_price and order_id are required in events
# because purchases are (the README: needed on purchase, cart and return rows).
REQUIRED: dict[str, tuple[str, ...]] = {
    "events": ("user_id", "item_id", "event_type", "event_at", "quantity", "unit_price", "order_id"),
    "items": ("item_id", "title"),
    "users": ("user_id",),
    "searches": ("search_id", "user_id", "query", "searched_at", "item_id", "action"),
}
# Tables whose file may be left out: without items, the items come from the events; without users,
# the users come from the events; without searches, there is no search log (search then has no query
# statistics to learn from, and fine-tuning learns recommendation alone).
OPTIONAL_TABLES = frozenset({"items", "users", "searches"})
# Tables whose file, when present, needs at least one data row: no events means nothing to build, and
# an empty catalogue would make every event an orphan (leave the file out instead). An empty users or
# searches file is harmless.
NEEDS_ROWS = frozenset({"events", "items"})

ONLINE_RETAIL = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
# The delimiters DuckDB's CSV sniffer tries; the header line decides which one a file uses.
DELIMITERS = (",", ";", "\t", "|")
ENDING_NAMES = {b"\r\n": "CRLF", b"\n": "LF"}


class RawContractError(AisleError, ValueError):
    """A raw file breaks the contract: the message names the file, the line (if any) and the rule."""


def _fail(path: Path, where: str, what: str, rule: str, context: str) -> RawContractError:
    location = f"{path}, {where}" if where else str(path)
    return RawContractError(f"{location}: {what} (rule {rule}; {context})")


def _lines(handle: BinaryIO, path: Path, context: str, endings: list[bytes]) -> Iterator[str]:
    """The file's physical lines, decoded, each with its line ending; UTF-8 is checked as they stream.

    The ending of each line is appended to `endings` (b"" for a last line without one), so the caller
    can check the ending of the line where each record ends.
    """
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte order mark, as Excel writes
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = raw[exc.start : exc.start + 1].hex().upper()
            raise _fail(
                path,
                f"line {number}",
                f"byte 0x{byte} at position {exc.start + 1} is not UTF-8",
                "utf8: the file must be UTF-8 text; re-save it as UTF-8",
                context,
            ) from None
        endings.append(b"\r\n" if raw.endswith(b"\r\n") else b"\n" if raw.endswith(b"\n") else b"")
        yield text


def _delimiter(header_line: str) -> str:
    """The delimiter that splits the header line into the most fields (comma on a tie)."""
    line = header_line.split("\r")[0].rstrip("\n")
    counts = {d: len(next(csv.reader([line], delimiter=d), [])) for d in DELIMITERS}
    return max(DELIMITERS, key=lambda d: counts[d])


def _check_header(
    path: Path, header: list[str], required: tuple[str, ...], optional: tuple[str, ...], context: str
) -> list[str]:
    if not any(name.strip() for name in header):
        raise _fail(
            path, "line 1", "the header line is empty", "has_header: line 1 names the columns", context
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        key = name.lower()
        if key in seen:
            raise _fail(
                path,
                "line 1",
                f"column {name} appears twice in the header (fields {seen[key]} and {position})",
                "unique_header: each column name once",
                context,
            )
        seen[key] = position
    missing = [column for column in required if column.lower() not in seen]
    if missing:
        expected = f"required columns {', '.join(required)}"
        if optional:
            expected += f"; optional {', '.join(optional)}"
        raise _fail(
            path,
            "line 1",
            f"column {', '.join(missing)} is missing from the header",
            f"required_columns: {expected}",
            context,
        )
    return [name.lower() for name in header]


def _check_csv(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], needs_rows: bool, context: str
) -> list[str]:
    """Stream a CSV file once; raise RawContractError at the first line that breaks a rule."""
    if path.stat().st_size == 0:
        raise _fail(path, "line 1", "the file is empty: no header, no rows", "has_header", context)
    opener = gzip.open if path.suffix == ".gz" else open
    endings: list[bytes] = []
    with opener(path, "rb") as handle:
        lines = _lines(handle, path, context, endings)
        first = next(lines, "")
        reader = csv.reader(itertools.chain([first], lines), delimiter=_delimiter(first), strict=True)
        first_ending = b""
        header: list[str] | None = None
        data_rows = 0
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise _csv_error(path, start, reader.line_num, exc, context) from None
            end = reader.line_num
            ending = endings[-1] if endings else b""
            endings.clear()
            if end == 1:
                first_ending = ending
            elif ending and first_ending and ending != first_ending:
                raise _fail(
                    path,
                    f"line {end}",
                    f"the line ends with {ENDING_NAMES[ending]}, "
                    f"but line 1 ends with {ENDING_NAMES[first_ending]}",
                    "one_line_ending: every line of a file ends the same way (all LF or all CRLF)",
                    context,
                )
            if header is None:
                header = record
                columns = _check_header(path, header, required, optional, context)
                continue
            if not record:
                continue  # a blank line (DuckDB skips it too)
            if len(record) != len(header):
                if end > start:
                    raise _fail(
                        path,
                        f"line {start}",
                        f"a quoted field opens on this line and only closes on line {end}, leaving "
                        f"{len(record)} fields where the header has {len(header)} (an unbalanced quote)",
                        "balanced_quotes: every opening quote has its closing quote on the same record",
                        context,
                    )
                raise _fail(
                    path,
                    f"line {start}",
                    f"the line has {len(record)} fields, the header (line 1) has {len(header)}",
                    "same_field_count: every row has as many fields as the header",
                    context,
                )
            data_rows += 1
    if header is None:
        raise _fail(path, "line 1", "the file has no header line", "has_header", context)
    if needs_rows and data_rows == 0:
        raise _fail(
            path,
            "line 1",
            "the header is the only line: the file has no data rows",
            "has_data_rows: the file holds at least one row (leave an optional file out instead)",
            context,
        )
    return columns


def _csv_error(path: Path, start: int, end: int, exc: csv.Error, context: str) -> RawContractError:
    message = str(exc)
    if "new-line character seen in unquoted field" in message:
        return _fail(
            path,
            f"line {end}",
            "the line holds a bare CR line ending (classic Mac), which no other line ending matches",
            "one_line_ending: every line of a file ends the same way (all LF or all CRLF)",
            context,
        )
    if "unexpected end of data" in message or "field larger than field limit" in message:
        what = (
            "a quoted field opens on this line and is never closed"
            if "unexpected end" in message
            else f"a quoted field opens on this line and runs on past line {end} "
            f"(over {csv.field_size_limit():,} characters) without closing"
        )
        return _fail(
            path,
            f"line {start}",
            f"{what} (an unbalanced quote)",
            "balanced_quotes: every opening quote has its closing quote",
            context,
        )
    if end > start:  # a quote on the record's first line swallowed the line break
        return _fail(
            path,
            f"line {start}",
            f"a quoted field opens on this line and closes on line {end} in the middle of a field "
            "(an unbalanced quote)",
            "balanced_quotes: every opening quote has its closing quote",
            context,
        )
    return _fail(
        path,
        f"line {end}",
        f"malformed quoting ({message})",
        "balanced_quotes: a quoted field is followed by a delimiter or the end of the line",
        context,
    )


def _check_parquet(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], needs_rows: bool, context: str
) -> list[str]:
    try:
        parquet = pq.ParquetFile(path)
        names, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise _fail(
            path, "", f"cannot be read as Parquet ({exc})", "readable_parquet: a valid Parquet file", context
        ) from None
    columns = _check_header(path, names, required, optional, context)
    if needs_rows and rows == 0:
        raise _fail(
            path,
            "",
            "the file has its columns but no data rows",
            "has_data_rows: the file holds at least one row (leave an optional file out instead)",
            context,
        )
    return columns


def check_file(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    *,
    needs_rows: bool = True,
    context: str = "canonical contract",
) -> list[str]:
    """Check one raw file; return its column names (lower case). Raises RawContractError."""
    if not path.exists():
        raise RawContractError(f"{path}: file is missing (rule required_file; {context})")
    if path.suffix == ".parquet":
        return _check_parquet(path, required, optional, needs_rows, context)
    return _check_csv(path, required, optional, needs_rows, context)


def _arrivals(folder: Path, table: str, extension: str, context: str) -> list[Path]:
    """Every file dbt's glob reads for a table (`<table>[.-]*<ext>`), in arrival order; a name the glob
    matches that is neither the initial file nor a dated drop is refused (dbt would read it)."""
    files = arrivals.arrival_files(folder, table, extension)
    for path in folder.glob(f"{table}[.-]*{extension}"):
        if path not in files:
            raise _fail(
                path,
                "",
                "the name is neither the initial file nor a dated drop",
                f"arrival_name: name it {table}.{extension} or {table}-YYYY-MM-DD.{extension}",
                context,
            )
    return files


def check(settings: Settings) -> dict[str, list[str]]:
    """Raise RawContractError unless every raw file the active adapter reads can be read as the contract
    says: each table's initial file and its dated drops (scoring/ingest/arrivals.py). Returns the columns
    of each table found (those of its first file; a table without a file is left out). A drop may be
    empty (a day without rows); an initial file of events or items needs rows."""
    root = settings.resolved_raw_path
    if settings.source == "online_retail":
        context = "the UCI Online Retail export"
        if not root.is_dir():
            return {"invoice_lines": check_file(root, ONLINE_RETAIL, context=context)}
        files = sorted(root.glob(f"{arrivals.ONLINE_RETAIL_TABLE}[.-]*csv*"))
        if not files:
            missing = arrivals.initial_path(root, arrivals.ONLINE_RETAIL_TABLE, "csv.gz")
            raise RawContractError(f"{missing}: file is missing (rule required_file; {context})")
        columns = [check_file(path, ONLINE_RETAIL, context=context) for path in files]
        return {"invoice_lines": columns[0]}
    extension = "csv" if settings.raw_format == "csv" else "parquet"
    found = {}
    for table, columns in CONTRACT.items():
        context = f"canonical contract, table {table}"
        files = _arrivals(root, table, extension, context)
        if not files:
            if table in OPTIONAL_TABLES:
                continue
            files = [arrivals.initial_path(root, table, extension)]  # reported missing below
        required = REQUIRED[table]
        optional = tuple(c for c in (*columns, *EXTRA_COLUMNS[table]) if c not in required)
        checked = [
            check_file(
                path,
                required,
                optional,
                needs_rows=table in NEEDS_ROWS and arrivals.drop_day(path) is None,
                context=context,
            )
            for path in files
        ]
        found[table] = checked[0]
    return found
