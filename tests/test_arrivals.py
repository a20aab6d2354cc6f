"""Raw arrivals: a table split into an initial file and dated drops keeps every row, in order, and the
pending drops arrive one day at a time."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from scoring.errors import AisleError
from scoring.ingest import arrivals


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["U1", "U2", "U1", "U3", "U2", "U4", "U1"],
            "event_at": [
                "2026-01-01 10:00:00",
                "2026-01-02 09:00:00",
                "not a time",  # a defect: arrives with the row before it (2026-01-02)
                "2026-01-03 08:00:00",
                "2026-01-02 07:00:00",  # written after a later day's row: arrives with it (late)
                "2031-01-04 12:00:00",  # years ahead of the data (a defect): arrives with the row before
                "2026-01-04 12:00:00",
            ],
        }
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_split_by_day_writes_an_initial_file_and_one_drop_per_day(tmp_path: Path, fmt: str) -> None:
    written = arrivals.split_by_day(
        _events(), "event_at", tmp_path, "events", fmt, dt.date(2026, 1, 3), last_day=dt.date(2026, 1, 4)
    )
    assert [p.name for p in written] == [
        f"events.{fmt}",
        f"events-2026-01-03.{fmt}",
        f"events-2026-01-04.{fmt}",
    ]
    assert arrivals.arrival_files(tmp_path, "events", fmt) == written
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    read = [duckdb.sql(f"select * from {reader}('{p}')").df()["user_id"].tolist() for p in written]
    assert read == [["U1", "U2", "U1"], ["U3", "U2", "U4"], ["U1"]]
    assert arrivals.drop_day(written[1]) == dt.date(2026, 1, 3)
    assert arrivals.drop_day(written[0]) is None


def test_release_next_day_moves_the_earliest_pending_day_of_every_table(tmp_path: Path) -> None:
    pending = arrivals.pending_dir(tmp_path)
    arrivals.split_by_day(
        _events(), "event_at", pending, "events", "parquet", dt.date(2026, 1, 3), dt.date(2026, 1, 4)
    )
    searches = pd.DataFrame({"search_id": ["S1"], "searched_at": ["2026-01-03 09:00:00"]})
    arrivals.split_by_day(searches, "searched_at", pending, "searches", "parquet", dt.date(2026, 1, 3))
    (pending / "events.parquet").rename(tmp_path / "events.parquet")

    first = arrivals.release_next_day(tmp_path)
    assert sorted(p.name for p in first) == ["events-2026-01-03.parquet", "searches-2026-01-03.parquet"]
    assert all(p.parent == tmp_path and p.exists() for p in first)
    assert [p.name for p in arrivals.release_next_day(tmp_path)] == ["events-2026-01-04.parquet"]
    with pytest.raises(AisleError, match="no pending days"):
        arrivals.release_next_day(tmp_path)
    assert [p.name for p in arrivals.arrival_files(tmp_path, "events", "parquet")] == [
        "events.parquet",
        "events-2026-01-03.parquet",
        "events-2026-01-04.parquet",
    ]


def test_release_never_overwrites_a_drop_that_has_arrived(tmp_path: Path) -> None:
    pending = arrivals.pending_dir(tmp_path)
    arrivals.split_by_day(
        _events(), "event_at", pending, "events", "parquet", dt.date(2026, 1, 4), dt.date(2026, 1, 4)
    )
    (tmp_path / "events-2026-01-04.parquet").write_bytes(b"already here")
    with pytest.raises(AisleError, match="already arrived"):
        arrivals.release_next_day(tmp_path)


def test_cut_by_day_keeps_the_published_text_of_online_retail(tmp_path: Path) -> None:
    source = tmp_path / "online_retail.csv.gz"
    lines = [  # invented rows in the file's layout: a quoted comma, an empty CustomerID, a cancellation
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
        '900001,ZX101A,"MUG, RED",6,2010-12-01 08:26:00,2.55,90001.0,United Kingdom',
        "900002,ZX102,PAPER LANTERN,6,2010-12-02 08:28:00,1.85,,United Kingdom",
        "C900003,D,Discount,-1,2010-12-03 09:41:00,27.50,90002.0,United Kingdom",
    ]
    with gzip.open(source, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    out = tmp_path / "cut"
    written = arrivals.cut_by_day(source, out, drop_days=2, pending=True)
    assert [p.relative_to(out).as_posix() for p in written] == [
        "online_retail.csv.gz",
        "_pending/online_retail-2010-12-02.csv.gz",
        "_pending/online_retail-2010-12-03.csv.gz",
    ]
    arrivals.release_next_day(out)
    arrivals.release_next_day(out)
    query = f"select * from read_csv('{out}/online_retail*.csv.gz', header = true, all_varchar = true)"
    together = duckdb.sql(query + " order by InvoiceDate").fetchall()
    original = duckdb.sql(f"select * from read_csv('{source}', header = true, all_varchar = true)").fetchall()
    assert together == original  # the same text, an empty CustomerID still reads as null


def test_the_raw_contract_checks_every_drop_and_refuses_stray_names(tmp_path: Path) -> None:
    from scoring.ingest import raw_contract
    from tests.conftest import tiny_settings

    header = "user_id,item_id,event_type,event_at,quantity,unit_price,order_id\n"
    (tmp_path / "events.csv").write_text(header + "U1,I1,purchase,2026-01-01 10:00:00,1,4.95,O1\n")
    (tmp_path / "events-2026-01-02.csv").write_text(header)  # a day without rows is a valid drop
    settings = tiny_settings(tmp_path, source="files", raw_path=tmp_path, raw_format="csv")
    assert raw_contract.check(settings)["events"][0] == "user_id"

    (tmp_path / "events-2026-01-03.csv").write_text("user_id,item_id\nU1,I1\n")
    with pytest.raises(
        raw_contract.RawContractError, match=r"events-2026-01-03\.csv, line 1: column event_type"
    ):
        raw_contract.check(settings)
    (tmp_path / "events-2026-01-03.csv").unlink()
    (tmp_path / "events-old.csv").write_text(header)
    with pytest.raises(raw_contract.RawContractError, match=r"events-old\.csv.*rule arrival_name"):
        raw_contract.check(settings)
