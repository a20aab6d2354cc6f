"""No event lost: every event `POST /events` answers 200 for is on disk in the event log and in the
shopper's session, whatever the number of workers and clients; a retried event counts once; a build turns
the log into raw data, governed like any other, and keeps the sessions.

The unit part drives the log (real SQLite files) and the request checks. The serving part starts the real
server (what `make serve` runs, 2 workers) on a copy of the scored tiny workspace and sends its events over
HTTP from 16 concurrent clients: 2,000 events for 50 users, a worker killed with SIGKILL mid-stream, and a
full build (the raw step and `dbt build` + Feast that `make score` starts with) while the server runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import requests

from scoring.events.log import COLUMNS, EventConflict, EventLog, sealed_through
from scoring.events.session import KINDS, Event
from scoring.ingest import arrivals
from scoring.ingest.prepare import prepare_raw
from scoring.pipeline.build import build_features
from scoring.serving.recommend_route import parse_event
from scoring.serving.request_body import RequestProblem
from scoring.serving.server import FeatureServer
from scoring.settings import Settings
from scoring.warehouse import tables
from tests.conftest import online_lookup, realtime_copy

TOKEN = "aisle-events-token-61d0e2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
CLIENTS = 16


# ----- unit: the log ------------------------------------------------------------------------------------
def _view(user: str, item: str, event_id: str | None = None) -> Event:
    return Event(user, item, "view", NOW, event_id=event_id)


def test_an_event_is_stored_once_per_event_id_and_a_failed_merge_stores_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.db")
    merged: list[str] = []
    first, _ = log.record(_view("U1", "I1", "e-1"), lambda: merged.append("e-1"))
    assert (first.event_id, first.seq, first.duplicate) == ("e-1", 1, False)
    for _ in range(4):  # retries: stored once, the (idempotent) merge runs again
        again, _ = log.record(_view("U1", "I1", "e-1"), lambda: merged.append("e-1"))
        assert (again.seq, again.duplicate) == (1, True)
    assert log.count() == 1 and merged == ["e-1"] * 5
    with pytest.raises(EventConflict, match="already stored"):
        log.record(_view("U1", "I2", "e-1"), lambda: None)
    # Without an event_id each request is an event of its own.
    ids = {log.record(_view("U1", "I1"), lambda: None)[0].event_id for _ in range(3)}
    assert len(ids) == 3 and log.count() == 4

    def broken() -> None:
        raise RuntimeError("the online store is gone")

    with pytest.raises(RuntimeError):
        log.record(_view("U2", "I9", "e-2"), broken)
    assert log.count() == 4 and "e-2" not in set(log.rows_after(0)["event_id"])


def test_the_log_survives_a_reopen_and_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = EventLog(path)
    log.record(_view("U1", "I1", "e-1"), lambda: None)
    log.close()
    with sqlite3.connect(path) as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert EventLog(path).rows_after(0)["event_id"].tolist() == ["e-1"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sealing_writes_each_event_once_as_a_raw_drop(tmp_path: Path, fmt: str) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    log = EventLog(tmp_path / "events.db")
    assert log.seal(raw, fmt, date(2026, 12, 1)) is None  # nothing stored yet
    log.record(Event("U1", "I1", "purchase", NOW, "e-1", unit_price="3.50"), lambda: None)
    log.record(_view("U2", "I2"), lambda: None)
    first = log.seal(raw, fmt, date(2026, 12, 1))
    assert first is not None and first.name == f"events-2026-12-01.served-000000000001-000000000002.{fmt}"
    assert log.seal(raw, fmt, date(2026, 12, 1)) is None and sealed_through(raw) == 2
    assert [e.item_id for e in log.unsealed(raw)] == []
    log.record(_view("U3", "I3"), lambda: None)
    assert [e.user_id for e in log.unsealed(raw)] == ["U3"]
    second = log.seal(raw, fmt, date(2026, 12, 2))
    assert second is not None and second.name.startswith("events-2026-12-02.served-000000000003-000000000003")
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # nothing left aside
    frames = [
        pd.read_parquet(p) if fmt == "parquet" else pd.read_csv(p, dtype=str, keep_default_na=False)
        for p in (first, second)
    ]
    rows = pd.concat(frames, ignore_index=True)
    assert list(rows.columns) == list(COLUMNS)
    purchase = rows.iloc[0]
    # A purchase without an order is its own order, of one unit; a view has no quantity.
    assert (purchase["quantity"], purchase["unit_price"], purchase["order_id"]) == ("1", "3.50", "e-1")
    assert purchase["event_at"] == "2026-12-01 09:30:00"
    assert rows["user_id"].tolist() == ["U1", "U2", "U3"]
    # The drops are dated drops of the events table, after that day's own drop in arrival order.
    (raw / "events-2026-12-01.parquet").touch()
    assert arrivals.drop_day(second) == date(2026, 12, 2)
    assert [p.name for p in arrivals.arrival_files(raw, "events", fmt)][-1] == second.name


def test_event_requests_take_an_id_and_a_purchase_line() -> None:
    body = json.dumps(
        {
            "user_id": "U1",
            "item_id": "I1",
            "event_type": "purchase",
            "event_id": "m-1",
            "quantity": 2,
            "unit_price": 3.5,
            "order_id": "O9",
        }
    ).encode()
    event = parse_event(body, NOW, 300)
    assert (event.event_id, event.quantity, event.unit_price, event.order_id) == ("m-1", 2, "3.50", "O9")
    for field, value, detail in [
        ("event_id", "", "`event_id` is empty"),
        ("event_id", 7, "`event_id` must be a string"),
        ("quantity", 0, "`quantity` must be a whole number"),
        ("quantity", True, "`quantity` must be a whole number"),
        ("unit_price", -1, "`unit_price` must be a number above 0"),
        ("unit_price", "3.50", "`unit_price` must be a number above 0"),
    ]:
        bad = json.dumps({"user_id": "U1", "item_id": "I1", "event_type": "view", field: value}).encode()
        with pytest.raises(RequestProblem) as refused:
            parse_event(bad, NOW, 300)
        assert refused.value.status == 422 and detail in refused.value.detail, refused.value.detail


# ----- the real server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, FeatureServer]]:
    """(a copy of the scored tiny workspace with its raw folder, the real server on it: 2 workers, write
    routes open to TOKEN)."""
    workspace, run_dir = scored_workspace
    copy = realtime_copy(
        workspace, run_dir, tmp_path_factory.mktemp("events"), serve_token=TOKEN, serve_workers=2
    )
    shutil.copytree(workspace.resolved_raw_path, copy.resolved_raw_path)
    with FeatureServer(copy) as server:
        yield copy, server


def _items(settings: Settings) -> list[str]:
    return sorted(pd.read_parquet(settings.runs_dir / "current" / "items.parquet")["item_id"])


def _send(
    server: FeatureServer, events: list[dict], answered: threading.Semaphore | None = None
) -> list[requests.Response | None]:
    """Each event POSTed once, from CLIENTS concurrent clients, in order; None where no answer came.
    `answered` is released once per answer."""

    def post(http: requests.Session, event: dict) -> requests.Response | None:
        try:
            return http.post(f"{server.url}/events", json=event, headers=AUTH, timeout=60)
        except requests.ConnectionError:
            return None
        finally:
            if answered is not None:
                answered.release()

    sessions = [requests.Session() for _ in range(CLIENTS)]
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(post, [sessions[i % CLIENTS] for i in range(len(events))], events))
    finally:
        for http in sessions:
            http.close()


def _sessions(server: FeatureServer, users: list[str]) -> dict[str, dict[str, set[str]]]:
    """Each user's online session, as Feast's own lookup answers it: per kind, the set of items."""
    columns = online_lookup(server.url, "session_v1", {"user_id": users})
    return {
        user: {kind: set(columns[f"{kind}_item_ids"][i] or []) for kind in KINDS.values()}
        for i, user in enumerate(users)
    }


def _per_user(events: list[dict]) -> dict[str, dict[str, set[str]]]:
    expected: dict[str, dict[str, set[str]]] = {}
    for event in events:
        kinds = expected.setdefault(event["user_id"], {kind: set() for kind in KINDS.values()})
        kinds[KINDS[event["event_type"]]].add(event["item_id"])
    return expected


def _burst(users: list[str], items: list[str], per_user: int) -> list[dict]:
    """`per_user` events for each user, each a different (item, kind), sent user after user so the clients
    hit the same user at the same instant."""
    pairs = [(item, kind) for kind in KINDS for item in items][:per_user]
    return [{"user_id": u, "item_id": item, "event_type": kind} for u in users for item, kind in pairs]


def test_concurrent_events_for_the_same_users_are_all_kept(served) -> None:
    settings, server = served
    log = EventLog(settings.event_log_path)
    before = log.count()
    users = [f"U-burst-{n:02d}" for n in range(50)]
    events = _burst(users, _items(settings), per_user=40)
    assert len(events) == 2_000
    answers = _send(server, events)
    assert [a.status_code if a is not None else None for a in answers] == [200] * len(events)
    # Every session holds exactly the events it was sent.
    assert _sessions(server, users) == _per_user(events)
    # The log holds each accepted event exactly once, under the id the answer gave.
    logged = log.rows_after(0).iloc[before:]
    assert len(logged) == len(events)
    assert sorted(logged["event_id"]) == sorted(a.json()["stored"]["event_id"] for a in answers)
    sent = sorted((e["user_id"], e["item_id"], e["event_type"]) for e in events)
    assert sorted(zip(logged["user_id"], logged["item_id"], logged["event_type"], strict=True)) == sent
    stored = answers[0].json()["stored"]
    assert stored["log"]["path"] == str(settings.event_log_path)
    assert stored["session"] == "user_session_activity"


def _worker_pids(server: FeatureServer) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def test_a_killed_worker_loses_no_acknowledged_event_and_tears_nothing(served) -> None:
    settings, server = served
    users = [f"U-kill-{n:02d}" for n in range(20)]
    events = _burst(users, _items(settings), per_user=30)
    victim = _worker_pids(server)[0]
    answered = threading.Semaphore(0)

    def kill_mid_stream() -> None:
        for _ in range(len(events) // 4):  # a quarter of the stream answered, the rest in flight
            answered.acquire()
        os.kill(victim, signal.SIGKILL)

    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(kill_mid_stream)
        answers = _send(server, events, answered)
        killed.result()
    acknowledged = [e for e, a in zip(events, answers, strict=True) if a is not None and a.status_code == 200]
    lost = len(events) - len(acknowledged)
    print(f"kill -9 of worker {victim}: {len(acknowledged)} of {len(events)} events answered 200, {lost} not")
    assert acknowledged, "no event was answered before the kill"
    # Every acknowledged event is in the log and in the session; the log is whole.
    with sqlite3.connect(settings.event_log_path) as con:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    logged = EventLog(settings.event_log_path).rows_after(0)
    logged_keys = set(zip(logged["user_id"], logged["item_id"], logged["event_type"], strict=True))
    assert {(e["user_id"], e["item_id"], e["event_type"]) for e in acknowledged} <= logged_keys
    held = _sessions(server, users)
    for user, kinds in _per_user(acknowledged).items():
        for kind, items in kinds.items():
            assert items <= held[user][kind], (user, kind)
    # gunicorn replaces the worker; the server keeps answering.
    deadline = time.monotonic() + 120
    while victim in _worker_pids(server) or len(_worker_pids(server)) < 2:
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.5)
    assert server.healthy()


def test_pushed_events_survive_a_build_once_each(served) -> None:
    """The module's last test: it rebuilds the copy's warehouse while the server runs."""
    settings, server = served
    items = _items(settings)
    prices = tables.read(settings, "select item_id, median_unit_price from dim_items").set_index("item_id")
    buyers = [f"U-build-{n}" for n in range(3)]
    purchases = [
        {
            "user_id": u,
            "item_id": items[n],
            "event_type": "purchase",
            "unit_price": float(prices.loc[items[n], "median_unit_price"]),
            "quantity": 2,
        }
        for n, u in enumerate(buyers)
    ]
    retried = {"user_id": "U-retry", "item_id": items[5], "event_type": "purchase", "event_id": "retry-1"}
    answers = _send(server, purchases) + [
        requests.post(f"{server.url}/events", json=retried, headers=AUTH, timeout=60) for _ in range(5)
    ]
    assert all(a is not None and a.status_code == 200 for a in answers)
    assert [a.json()["stored"]["log"]["duplicate"] for a in answers[-5:]] == [False] + [True] * 4
    orders = [a.json()["stored"]["event_id"] for a in answers[:3]] + ["retry-1"]
    conflict = requests.post(
        f"{server.url}/events", json={**retried, "item_id": items[6]}, headers=AUTH, timeout=60
    )
    assert conflict.status_code == 409 and "already stored" in conflict.json()["detail"]

    raw = prepare_raw(settings)  # the first step of `make score`: the log is sealed into raw data
    assert raw["served_events"].startswith(f"events-{datetime.now(UTC).date().isoformat()}.served-")
    late = {"user_id": "U-late", "item_id": items[7], "event_type": "view"}  # after the seal
    assert requests.post(f"{server.url}/events", json=late, headers=AUTH, timeout=60).status_code == 200
    build = build_features(settings)
    assert json.loads((build / "build.json").read_text())["replayed_events"] == 1

    lines = tables.read(
        settings,
        "select order_id, user_id, item_id, quantity, unit_price from fct_order_lines where order_id in ("
        + ", ".join(f"'{o}'" for o in orders)
        + ")",
    )
    assert sorted(lines["order_id"]) == sorted(orders)  # each once: the retried purchase too
    assert set(lines["user_id"]) == {*buyers, "U-retry"}
    assert set(lines.loc[lines["user_id"].isin(buyers), "quantity"]) == {2}
    conservation = tables.read(settings, "select relation, is_balanced from fct_row_conservation")
    assert conservation["is_balanced"].all(), conservation
    # The sessions the build reloaded hold the sealed purchases, and the event sent after the seal.
    held = _sessions(server, [*buyers, "U-retry", "U-late"])
    for n, user in enumerate(buyers):
        assert held[user]["bought"] == {items[n]}
    assert held["U-retry"]["bought"] == {items[5]}
    assert held["U-late"]["viewed"] == {items[7]}
    # The next build seals the late event, and only it.
    assert [e.user_id for e in EventLog(settings.event_log_path).unsealed(settings.resolved_raw_path)] == [
        "U-late"
    ]
