"""dbt's incremental path equals a full build: the tiny demo shop's last two days arrive as dated drops
(scoring/ingest/arrivals.py), and building the base then `dbt build` again after each drop (the same
DuckDB file, incremental staging) gives exactly the warehouse that one `dbt build` over every file gives:
every table and view (staging, intermediate, the Parquet marts, the quarantine, the conservation figures).
A late return in a drop nets its base purchase the same way in both, a corrected line (the wrong line
returned whole, the right line bought) is two rows in both, and rerunning with nothing new (here on a
copy of the warehouse in a fresh build folder, as `aisle update` seeds one) loads nothing twice, and
`dbt build --full-refresh` over the incremental warehouse rebuilds the same thing from every file.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from scoring.ingest import arrivals, demo_shop
from scoring.settings import Settings
from scoring.warehouse import dbt
from tests.conftest import tiny_settings

pytestmark = pytest.mark.integration  # every test here builds with dbt in its fixture

DROP_DAYS = 2
END = "2026-10-31"  # the demo shop's end date: its last day is the day before
LATE_AT, CORRECTED_AT = "12:00:00", "12:01:00"


def _late_rows(events: pd.DataFrame, last_day: dt.date) -> tuple[pd.DataFrame, dict[str, str]]:
    """Two defects of real shops, dated on the last day: a late return of a base purchase (of a user and
    item bought only once, so the match is unambiguous) and a corrected line (a base line returned whole
    as a mistake, and the right quantity bought again under the same order)."""
    base = events[
        pd.to_datetime(events["event_at"], errors="coerce") < pd.Timestamp(last_day - dt.timedelta(1))
    ]
    purchases = base[
        (base["event_type"] == "purchase") & base["quantity"].str.fullmatch(r"[1-9]\d*").eq(True)
    ]
    bought = events[events["event_type"].isin(["purchase", "return"])].groupby(["user_id", "item_id"]).size()
    once = purchases[
        [bought.get((u, i), 0) == 1 for u, i in zip(purchases["user_id"], purchases["item_id"], strict=True)]
    ]
    late, wrong = once.iloc[0], once.iloc[1]
    at, corrected_at = (f"{last_day.isoformat()} {t}" for t in (LATE_AT, CORRECTED_AT))
    rows = [
        {**late.to_dict(), "event_type": "return", "event_at": at, "quantity": "1"},
        {**wrong.to_dict(), "event_type": "return", "event_at": at},
        {**wrong.to_dict(), "event_at": corrected_at, "quantity": str(int(wrong["quantity"]) + 1)},
    ]
    keys = {"late": late["order_id"], "wrong": wrong["order_id"], "item_late": late["item_id"]}
    keys["item_wrong"] = wrong["item_id"]
    return pd.DataFrame(rows, columns=events.columns), keys


def _build(settings: Settings, folder: Path, timings: dict[str, float], name: str, *args: str) -> Settings:
    """`dbt build` into a build folder. The full build runs everything; the others leave out the SQL unit
    tests (`args`), which read fixtures, not data, so they cannot tell the builds apart."""
    staged = settings.for_build(folder)
    started = time.perf_counter()
    dbt.run(staged, "build", *args)
    timings[name] = round(time.perf_counter() - started, 1)
    return staged


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same raw files built at once (full) and base-then-drop-by-drop (incremental), plus a rerun of
    the incremental warehouse with nothing new, copied into a fresh build folder first."""
    root = tmp_path_factory.mktemp("incremental")
    generated = root / "generated"
    demo_shop.generate(generated, n_users=150, n_items=60, days=60, seed=11, defect_rate=0.02, end_date=END)
    events = pd.read_parquet(generated / "events.parquet")
    searches = pd.read_parquet(generated / "searches.parquet")
    times = pd.to_datetime(events["event_at"], errors="coerce", format="ISO8601")
    last_day = times[times < pd.Timestamp(END)].max().date()  # later times are defects (years ahead)
    first_drop = last_day - dt.timedelta(DROP_DAYS - 1)
    extra, keys = _late_rows(events, last_day)
    events = pd.concat([events, extra], ignore_index=True)

    everything, arriving = root / "raw_all", root / "raw_arriving"
    for folder, drops_to in ((everything, everything), (arriving, arrivals.pending_dir(arriving))):
        for table, frame, column in (("events", events, "event_at"), ("searches", searches, "searched_at")):
            written = arrivals.split_by_day(frame, column, drops_to, table, "parquet", first_drop, last_day)
            initial = arrivals.initial_path(drops_to, table, "parquet")
            if drops_to != folder:
                initial.rename(arrivals.initial_path(folder, table, "parquet"))
            assert len(written) == 1 + DROP_DAYS
        for table in ("items", "users"):
            shutil.copy(generated / f"{table}.parquet", folder / f"{table}.parquet")

    timings: dict[str, float] = {}
    full = _build(
        tiny_settings(root / "full", source="files", raw_path=everything), root / "full/b", timings, "full"
    )
    incremental_settings = tiny_settings(root / "inc", source="files", raw_path=arriving)
    incremental = _build(incremental_settings, root / "inc/b", timings, "base", *dbt.NO_UNIT_TESTS)
    for day in range(DROP_DAYS):
        arrived = arrivals.release_next_day(arriving)
        assert [p.name for p in arrived] == [
            f"events-{first_drop + dt.timedelta(day)}.parquet",
            f"searches-{first_drop + dt.timedelta(day)}.parquet",
        ]
        _build(incremental_settings, root / "inc/b", timings, f"drop {day + 1}", *dbt.NO_UNIT_TESTS)
    _copy_build(incremental, root / "inc/rerun")
    rerun = _build(incremental_settings, root / "inc/rerun", timings, "rerun", *dbt.NO_UNIT_TESTS)
    _copy_build(incremental, root / "inc/refreshed")
    refreshed = _build(
        incremental_settings,
        root / "inc/refreshed",
        timings,
        "full refresh",
        "--full-refresh",
        *dbt.NO_UNIT_TESTS,
    )
    print("dbt build timings (s):", timings)
    return {
        "full": full,
        "incremental": incremental,
        "rerun": rerun,
        "refreshed": refreshed,
        "keys": keys,
        "raw": everything,
    }


def _copy_build(source: Settings, folder: Path) -> None:
    """Seed a new build folder with a build's warehouse and Parquet marts, as `aisle update` does."""
    folder.mkdir()
    shutil.copy(source.warehouse_path, folder / "warehouse.duckdb")
    shutil.copytree(source.marts_dir, folder / "marts")


def _relations(con: duckdb.DuckDBPyConnection, catalog: str) -> list[tuple[str, str]]:
    return con.sql(
        f"select table_schema, table_name from information_schema.tables where table_catalog = '{catalog}' "
        "order by 1, 2"
    ).fetchall()


def _differences(a: Settings, b: Settings) -> dict[str, tuple[int, int, int]]:
    """Every relation of two warehouses compared as multisets of rows: {name: (rows in a, only in a,
    only in b)} for those that differ; also names a relation only one of them has."""
    con = duckdb.connect()
    con.execute(f"attach '{a.warehouse_path}' as a (read_only)")
    con.execute(f"attach '{b.warehouse_path}' as b (read_only)")
    names_a, names_b = _relations(con, "a"), _relations(con, "b")
    assert names_a == names_b
    assert len(names_a) > 20
    different = {}
    for schema, name in names_a:
        left, right = f'a."{schema}"."{name}"', f'b."{schema}"."{name}"'
        rows = con.sql(f"select count(*) from {left}").fetchall()[0][0]
        only_a = con.sql(
            f"select count(*) from (select * from {left} except all select * from {right})"
        ).fetchall()[0][0]
        only_b = con.sql(
            f"select count(*) from (select * from {right} except all select * from {left})"
        ).fetchall()[0][0]
        if only_a or only_b:
            different[f"{schema}.{name}"] = (rows, only_a, only_b)
    return different


def test_incremental_builds_equal_the_full_build(builds: dict) -> None:
    assert _differences(builds["full"], builds["incremental"]) == {}


def test_a_full_refresh_rebuilds_everything_the_same(builds: dict) -> None:
    assert _differences(builds["full"], builds["refreshed"]) == {}


def test_a_rerun_with_nothing_new_loads_nothing_twice(builds: dict) -> None:
    assert _differences(builds["incremental"], builds["rerun"]) == {}
    con = duckdb.connect(str(builds["rerun"].warehouse_path), read_only=True)
    loaded = con.sql(
        "select source_file, count(*), count(distinct row_key) from staging.stg_shop__events "
        "group by 1 order by 1"
    ).fetchall()
    assert [f for f, _, _ in loaded] == sorted(p.name for p in builds["raw"].glob("events*.parquet"))
    assert all(rows == keys for _, rows, keys in loaded)
    # The copied warehouse's Parquet marts are the ones its own build folder wrote, not the source's.
    views = con.sql("select sql from duckdb_views() where sql like '%read_parquet%'").fetchall()
    assert views and all(str(builds["rerun"].marts_dir) in sql for (sql,) in views)


def test_late_returns_and_corrected_lines_net_the_same_way(builds: dict) -> None:
    keys = builds["keys"]
    lines = {}
    for name in ("full", "incremental"):
        con = duckdb.connect(str(builds[name].warehouse_path), read_only=True)
        lines[name] = con.sql(
            "select order_id, item_id, quantity, returned_quantity, net_quantity from main.fct_order_lines "
            f"where order_id in ('{keys['late']}', '{keys['wrong']}') order by all"
        ).fetchall()
    assert lines["full"] == lines["incremental"]
    by_order = {}
    for order_id, item_id, quantity, returned, net in lines["full"]:
        by_order.setdefault((order_id, item_id), []).append((quantity, returned, net))
    late = by_order[(keys["late"], keys["item_late"])]
    assert [(q, r, n) for q, r, n in late] == [(late[0][0], 1, late[0][0] - 1)]
    wrong = sorted(by_order[(keys["wrong"], keys["item_wrong"])])
    # The wrong line is returned whole (net 0); the corrected line, bought after it, stands in full.
    assert wrong[0][2] == 0 and wrong[1] == (wrong[1][0], 0, wrong[1][0])


def test_rows_are_conserved_over_every_file(builds: dict) -> None:
    for name in ("full", "incremental"):
        con = duckdb.connect(str(builds[name].warehouse_path), read_only=True)
        events = con.sql(
            "select raw_rows, clean_rows + quarantined_rows from main.fct_row_conservation "
            "where relation = 'events'"
        ).fetchall()[0]
        on_disk = duckdb.sql(
            f"select count(*) from read_parquet('{builds['raw']}/events[.-]*parquet')"
        ).fetchall()[0][0]
        assert events == (on_disk, on_disk)
