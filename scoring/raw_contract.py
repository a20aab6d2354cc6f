"""Check raw files against the canonical contract before dbt reads them.

A value that breaks a rule is quarantined row by row in dbt, so nothing is lost; but a file that lacks
a required column cannot be read at all. This check fails first, with a message that names the file,
the column and the rule, instead of a binder error from deep inside a model.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from scoring.settings import Settings

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
}
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


class RawContractError(ValueError):
    """A raw file breaks the contract: the message names the file, the column and the rule."""


def _columns(path: Path, reader: str) -> list[str]:
    try:
        described = duckdb.sql(f"describe select * from {reader}('{path}') limit 0").fetchall()
    except duckdb.Error as exc:
        raise RawContractError(f"{path}: cannot be read as {reader.removeprefix('read_')} ({exc})") from exc
    return [row[0] for row in described]


def _require(path: Path, reader: str, required: tuple[str, ...], rule: str) -> None:
    if not path.exists():
        raise RawContractError(f"{path}: file is missing (rule: {rule})")
    present = set(_columns(path, reader))
    missing = [column for column in required if column not in present]
    if missing:
        raise RawContractError(
            f"{path}: column {', '.join(missing)} is missing (rule: {rule}; "
            f"expected columns {', '.join(required)})"
        )


def check(settings: Settings) -> None:
    """Raise RawContractError unless every raw file the active adapter reads has its columns."""
    root = settings.resolved_raw_path
    if settings.source == "online_retail":
        _require(root, "read_csv", ONLINE_RETAIL, "the UCI Online Retail export")
        return
    extension, reader = ("csv", "read_csv") if settings.raw_format == "csv" else ("parquet", "read_parquet")
    for table, columns in CONTRACT.items():
        _require(root / f"{table}.{extension}", reader, columns, f"canonical contract, table {table}")
