"""The demo shop's held-back days (AISLE_DEMO_PENDING_DAYS): its last days of events and searches wait as
dated drops in the raw folder's _pending/, and `aisle demo next-day` lets one day arrive at a time.

What must hold for `make update` to be comparable with a full build: the initial files followed by every
drop in date order are exactly the shop generated without pending days (same rows, same order, so the
same row keys), and releasing a day moves that day and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.cli import main
from scoring.ingest import arrivals
from scoring.ingest.demo_shop import ARRIVING, generate
from scoring.ingest.prepare import prepare_raw
from scoring.settings import Settings

SHOP = dict(n_users=150, n_items=60, days=30, seed=3, defect_rate=0.05)
PENDING = 3
WHOLE = (
    "items.parquet",
    "users.parquet",
    "_truth/clean_titles.parquet",
    "_truth/clean_descriptions.parquet",
    "_truth/clean_queries.parquet",
)


def _arrived(raw: Path, table: str) -> pa.Table:
    """A table as dbt reads it: the initial file, then the drops in the raw folder by date."""
    return pa.concat_tables([pq.read_table(p) for p in arrivals.arrival_files(raw, table, "parquet")])


def _held_back_days(raw: Path) -> list[dt.date]:
    return sorted({d for p in arrivals.pending_dir(raw).iterdir() if (d := arrivals.drop_day(p))})


@pytest.fixture(scope="module")
def shops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The same shop written whole and with its last PENDING days held back."""
    root = tmp_path_factory.mktemp("drops")
    generate(root / "whole", **SHOP)
    summary = generate(root / "held", **SHOP, pending_days=PENDING)
    return root / "whole", root / "held", summary


def test_the_drops_after_the_initial_files_are_the_shop_without_pending_days(shops: tuple) -> None:
    whole, held, summary = shops
    end = dt.date.fromisoformat("2026-10-31")
    assert _held_back_days(held) == [end - dt.timedelta(days=n) for n in range(PENDING, 0, -1)]
    for table in ARRIVING:
        pending = sorted(arrivals.pending_dir(held).glob(f"{table}-*.parquet"))
        assert len(pending) == PENDING
        assert not list(held.glob(f"{table}-*.parquet")), "nothing has arrived yet"
        joined = pa.concat_tables(
            [pq.read_table(held / f"{table}.parquet")] + [pq.read_table(p) for p in pending]
        )
        assert joined.equals(pq.read_table(whole / f"{table}.parquet")), table
        for path in pending:
            rows = summary["drops"][arrivals.drop_day(path).isoformat()][table]
            assert pq.read_metadata(path).num_rows == rows > 0
    for name in WHOLE:
        assert (held / name).read_bytes() == (whole / name).read_bytes(), name
    assert summary["parameters"]["pending_days"] == PENDING
    assert "pending_days" not in json.loads((whole / "_truth/summary.json").read_text())["parameters"]


def test_the_truth_says_which_day_each_defect_arrives_on(shops: tuple) -> None:
    whole, held, _ = shops
    truth = pd.read_parquet(held / "_truth/defects.parquet")
    assert truth.drop(columns="arrives").equals(pd.read_parquet(whole / "_truth/defects.parquet"))
    assert truth["arrives"].notna().any()
    for table in ARRIVING:
        # Row numbers count over the initial file, then the drops by date: each row's file is its day.
        bounds, day_of_file = [pq.read_metadata(held / f"{table}.parquet").num_rows], [None]
        for path in sorted(arrivals.pending_dir(held).glob(f"{table}-*.parquet")):
            bounds.append(bounds[-1] + pq.read_metadata(path).num_rows)
            day_of_file.append(arrivals.drop_day(path).isoformat())
        rows = truth[truth["table"] == table]
        expected = [day_of_file[next(i for i, b in enumerate(bounds) if n < b)] for n in rows["row_number"]]
        assert rows["arrives"].tolist() == expected, table
    assert truth.loc[~truth["table"].isin(list(ARRIVING)), "arrives"].isna().all()


def _demo_settings(data_dir: Path, pending_days: int, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment `aisle` reads (Settings() in the command), and the same settings in process."""
    env = {
        "AISLE_SOURCE": "demo",
        "AISLE_DATA_DIR": str(data_dir),
        "AISLE_DEMO_USERS": "150",
        "AISLE_DEMO_ITEMS": "60",
        "AISLE_DEMO_DAYS": "30",
        "AISLE_DEMO_PENDING_DAYS": str(pending_days),
    }
    for key in ("AISLE_RAW_PATH", "AISLE_DEMO_CADENCE", "AISLE_DEMO_END_DATE", "AISLE_DEMO_SEED"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_next_day_releases_exactly_one_day_and_none_left_says_how_to_hold_days_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _demo_settings(tmp_path, 2, monkeypatch)
    raw = settings.resolved_raw_path
    assert prepare_raw(settings)["generated"]
    first, second = _held_back_days(raw)
    before = {table: _arrived(raw, table).num_rows for table in ARRIVING}

    main(["demo", "next-day"])
    released = sorted(p.name for p in raw.glob("*-????-??-??.parquet"))
    assert released == sorted(f"{table}-{first.isoformat()}.parquet" for table in ARRIVING)
    assert _held_back_days(raw) == [second]
    assert capsys.readouterr().out.count("released ") == len(ARRIVING)
    for table in ARRIVING:
        day = pq.read_metadata(raw / f"{table}-{first.isoformat()}.parquet").num_rows
        assert _arrived(raw, table).num_rows == before[table] + day

    # The same parameters: the partly released shop is reused as it is, not written again.
    assert prepare_raw(settings)["generated"] is False
    assert _held_back_days(raw) == [second]

    main(["demo", "next-day"])
    assert not _held_back_days(raw)
    with pytest.raises(SystemExit) as exit_status:
        main(["demo", "next-day"])
    assert exit_status.value.code == 1
    message = capsys.readouterr().err
    assert "no pending days" in message and "AISLE_DEMO_PENDING_DAYS" in message

    # Every day arrived: the raw folder now holds the whole shop. Regenerating without pending days
    # removes the drops, so no day is read twice.
    whole = _demo_settings(tmp_path / "whole", 0, monkeypatch)
    prepare_raw(whole)
    for table in ARRIVING:
        assert _arrived(raw, table).equals(pq.read_table(whole.resolved_raw_path / f"{table}.parquet"))
    prepare_raw(_demo_settings(tmp_path, 0, monkeypatch))
    assert not list(raw.glob("*-????-??-??.parquet")) and not arrivals.pending_dir(raw).exists()
