"""Rebuilds and republishes keep every reader right: after a build the online store holds exactly the
latest offline values (a restated title, a new item, a late order, an entity that left), after a publish
it serves exactly the published users, and a build that fails or is killed leaves the last good
warehouse, marts, registry, online store and publication as they were. Real dbt, Feast and `feast serve`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from scoring.features import feature_store
from scoring.ingest import demo_shop
from scoring.pipeline import publish
from scoring.pipeline.build import build_features
from scoring.serving.server import FeatureServer
from scoring.settings import ROOT, Settings
from scoring.warehouse import tables
from scoring.warehouse.dbt import DbtBuildError
from tests.conftest import tiny_settings
from tests.test_feast_online import VIEWS

pytestmark = pytest.mark.integration  # every test builds or publishes again in its body

NEW_ITEM = "I09999"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A built workspace over a folder of the user's own files (a clean tiny demo shop)."""
    root = tmp_path_factory.mktemp("rebuilds")
    demo_shop.generate(root / "raw", n_users=120, n_items=50, days=60, seed=7, defect_rate=0.0)
    settings = tiny_settings(root / "data", source="files", raw_path=root / "raw", raw_format="parquet")
    build_features(settings)
    return settings


def _lookup(url: str, feature: str, entities: dict[str, list[str]]) -> list:
    """One feature's values over HTTP, as another service would ask for them (None: NOT_FOUND)."""
    response = requests.post(
        f"{url}/get-online-features", json={"features": [feature], "entities": entities}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    names = body["metadata"]["feature_names"]
    return body["results"][names.index(feature.split(":")[1])]["values"]


def _latest(settings: Settings, mart: str, key: str, value: str) -> pd.Series:
    rows = pd.read_parquet(settings.marts_dir / f"{mart}.parquet")
    return rows[rows[key] == value].sort_values("event_timestamp").iloc[-1]


def _online_entities(settings: Settings, view: str) -> int:
    with sqlite3.connect(settings.online_store_path) as con:
        return con.execute(f'select count(distinct entity_key) from "aisle_{view}"').fetchone()[0]


def _restate(settings: Settings, user: str, item: str, price: str, gone: str) -> None:
    """The shop's next export: item's title restated, a new item, a late repeat order of item by user
    (dated before the last build's newest snapshot), and item `gone` dropped from the catalogue."""
    raw = settings.resolved_raw_path
    items = pd.read_parquet(raw / "items.parquet")
    items.loc[items["item_id"] == item, "title"] = "Restated Lantern Zq"
    new = items.iloc[[0]].assign(item_id=NEW_ITEM, title="Brand New Teapot", description=None)
    pd.concat([items[items["item_id"] != gone], new]).to_parquet(raw / "items.parquet", index=False)
    events = pd.read_parquet(raw / "events.parquet")
    late = (
        events[events["user_id"] == user]
        .iloc[[0]]
        .assign(
            item_id=item,
            event_type="purchase",
            event_at="2026-10-20 12:00:00",
            quantity="1",
            unit_price=price,
            order_id="O9999001",
        )
    )
    pd.concat([events[events["item_id"] != gone], late]).to_parquet(raw / "events.parquet", index=False)


def test_a_rebuild_serves_the_latest_values_over_http(shop: Settings) -> None:
    lines = tables.read(shop, "select user_id, item_id, unit_price from fct_order_lines order by 1, 2")
    user, item, price = lines.iloc[0]
    bought = set(lines.loc[lines["user_id"] == user, "item_id"])
    gone = sorted(set(tables.read(shop, "select item_id from dim_items")["item_id"]) - bought)[0]
    orders_before = int(_latest(shop, "fct_user_stats", "user_id", user)["orders_count"])

    with FeatureServer(shop) as server:
        assert _lookup(server.url, "item_text:title", {"item_id": [gone]}) != [None]
        _restate(shop, user, item, f"{price:.2f}", gone)
        build_features(shop)  # the server keeps running: no restart between builds

        titles = _lookup(server.url, "item_text:title", {"item_id": [item, NEW_ITEM, gone]})
        assert titles == ["Restated Lantern Zq", "Brand New Teapot", None]
        orders = _lookup(server.url, "user_stats:orders_count", {"user_id": [user]})
    offline = int(_latest(shop, "fct_user_stats", "user_id", user)["orders_count"])
    assert orders == [offline] == [orders_before + 1]

    # Not only the changed rows: every view holds exactly the entities its mart has, no more, no less.
    for view, (mart, keys) in VIEWS.items():
        rows = pd.read_parquet(shop.marts_dir / f"{mart}.parquet", columns=keys)
        assert _online_entities(shop, view) == len(rows.drop_duplicates()), view


def _recommendations(users: list[str], items: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "user_id": u,
                "item_id": i,
                "rank": r + 1,
                "score": 1.0 - r / 10,
                "source": "popular",
                "list": "top",
                "reason": "Popular this month",
            }
            for u in users
            for r, i in enumerate(items[:3])
        ]
    )


def test_publishing_serves_exactly_the_published_users_with_no_gap(shop: Settings, tmp_path: Path) -> None:
    users = tables.read(shop, "select distinct user_id from fct_order_lines order by 1")["user_id"]
    users = users.tolist()
    items = tables.read(shop, "select item_id from dim_items order by 1")["item_id"].tolist()
    kept, dropped = users[:20], users[20:40]
    as_of = pd.Timestamp("2026-10-31")
    fs = feature_store.store(shop)
    service = fs.get_feature_service("recommendations_v1")

    def served(who: list[str]) -> list:
        return fs.get_online_features(features=service, entity_rows=[{"user_id": u} for u in who]).to_dict()[
            "item_ids"
        ]

    publish.publish(shop, _recommendations(kept + dropped, items), "run-a", as_of, tmp_path)
    assert all(served(kept + dropped))

    # A reader on its own connection keeps asking for a kept user while lists are republished.
    gaps: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        other = feature_store.store(shop)
        while not stop.is_set():
            got = other.get_online_features(features=service, entity_rows=[{"user_id": kept[0]}]).to_dict()
            if not got["item_ids"][0]:
                gaps.append(got)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for run in range(4):
            who = kept if run % 2 == 0 else kept + dropped
            publish.publish(shop, _recommendations(who, items[run:]), f"run-{run}", as_of, tmp_path)
    finally:
        stop.set()
        thread.join()
    assert gaps == []

    publish.publish(shop, _recommendations(kept, items), "run-b", as_of, tmp_path)
    assert all(served(kept))
    assert served(dropped) == [None] * len(dropped)
    assert _online_entities(shop, "user_recommendations") == len(kept)
    published = pd.read_parquet(shop.published_dir / "user_recommendations.parquet")
    assert sorted(published["user_id"]) == sorted(kept)


def _state(settings: Settings) -> dict[str, str]:
    """A digest of everything a reader sees: the live build, its files, every online row, the publication."""
    digests = {"live": os.readlink(settings.live_dir)}
    files = [settings.warehouse_path, settings.registry_path, *sorted(settings.marts_dir.glob("*.parquet"))]
    files += sorted(settings.published_dir.glob("*"))
    for path in files:
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    with sqlite3.connect(settings.online_store_path) as con:
        for (table,) in con.execute("select name from sqlite_master where type = 'table' order by 1"):
            rows = con.execute(f'select * from "{table}" order by entity_key, feature_name').fetchall()
            digests[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return digests


def test_a_failed_build_leaves_everything_as_it_was(shop: Settings) -> None:
    before = _state(shop)
    assert len(before) > 10
    # A cut-off before the shop's first event empties the facts, and dbt's not_null tests fail.
    with pytest.raises(DbtBuildError):
        build_features(shop.model_copy(update={"as_of": "2000-01-01 00:00:00"}))
    assert _state(shop) == before


def test_a_build_killed_midway_leaves_everything_as_it_was(shop: Settings) -> None:
    before = _state(shop)
    builds = set(shop.builds_dir.iterdir())
    env = {
        **os.environ,
        **{f"AISLE_{k.upper()}": str(v) for k, v in shop.model_dump(mode="json").items() if v is not None},
        "AISLE_SERVE_TOKEN": "",
    }
    job = subprocess.Popen(
        [sys.executable, "-m", "scoring", "features"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        started = [b for b in set(shop.builds_dir.iterdir()) - builds if (b / "warehouse.duckdb").exists()]
        if started:
            break
        time.sleep(0.2)
    assert job.poll() is None, job.stderr.read().decode() if job.stderr else ""
    os.killpg(job.pid, signal.SIGKILL)  # dbt is a child process: kill the whole job
    job.wait()
    assert _state(shop) == before
