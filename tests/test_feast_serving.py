"""The real `feast serve` (what `make serve` runs) on 127.0.0.1, over real HTTP.

The server runs on a copy of the scored workspace's registry, online store and publication, so the
freshness test can republish without touching the session's workspace. Values are checked against the
dbt marts and the published recommendations Parquet; bad requests get the documented statuses and
leave the server up; a republication is served at once, without a restart.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from scoring import publish
from scoring.serving import FeatureServer
from scoring.settings import Settings
from tests.conftest import tiny_settings

UNKNOWN_USER = "U999999"


@pytest.fixture(scope="module")
def served(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Settings, FeatureServer]]:
    """(the scored workspace, its serving copy, the running server on the copy)."""
    workspace, _ = scored_workspace
    copy = tiny_settings(tmp_path_factory.mktemp("served"))
    shutil.copytree(workspace.feast_dir, copy.feast_dir)
    shutil.copytree(workspace.published_dir, copy.published_dir)
    with FeatureServer(copy) as server:
        yield workspace, copy, server


def _post(server: FeatureServer, body: dict, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(f"{server.url}/get-online-features", json=body, timeout=30)


def _columns(response: requests.Response) -> dict[str, dict[str, list]]:
    """Feast's column-wise answer as {feature: {"values": [...], "statuses": [...]}}."""
    body = response.json()
    names = body["metadata"]["feature_names"]
    return {name: result for name, result in zip(names, body["results"], strict=True)}


def _latest(settings: Settings, mart: str, keys: list[str]) -> pd.DataFrame:
    rows = pd.read_parquet(settings.marts_dir / f"{mart}.parquet")
    return rows.sort_values("event_timestamp").groupby(keys).tail(1).set_index(keys)


def _recommendations(settings: Settings) -> pd.DataFrame:
    """The published long-format file, one row per (user, rank)."""
    return pd.read_parquet(settings.published_recommendations).sort_values(["user_id", "rank"])


def _assert_server_still_serves(server: FeatureServer, user: str) -> None:
    assert server.running() and server.healthy()
    answer = _columns(
        _post(server, {"feature_service": "recommendations_v1", "entities": {"user_id": [user]}})
    )
    assert answer["item_ids"]["statuses"] == ["PRESENT"]


def test_ranking_v1_over_http_matches_the_marts(served) -> None:
    workspace, _, server = served
    pairs = _latest(workspace, "fct_user_item_stats", ["user_id", "item_id"]).sample(n=15, random_state=2)
    users, items = pairs.index.get_level_values(0).tolist(), pairs.index.get_level_values(1).tolist()
    response = _post(
        server, {"feature_service": "ranking_v1", "entities": {"user_id": users, "item_id": items}}
    )
    assert response.status_code == 200, response.text
    answer = _columns(response)
    assert answer["user_id"]["values"] == users and answer["item_id"]["values"] == items
    expected = {
        "fct_user_stats": _latest(workspace, "fct_user_stats", ["user_id"]).loc[users],
        "fct_item_stats": _latest(workspace, "fct_item_stats", ["item_id"]).loc[items],
        "fct_user_item_stats": pairs,
    }
    checked = 0
    for frame in expected.values():
        for name in frame.columns.drop("event_timestamp"):
            assert answer[name]["statuses"] == ["PRESENT"] * len(users), name
            assert answer[name]["values"] == frame[name].tolist(), name
            checked += 1
    assert checked == len(answer) - 2 == 21  # every ranking_v1 feature, besides the two join keys


def test_recommendations_v1_over_http_match_the_published_parquet(served) -> None:
    _, copy, server = served
    recs = _recommendations(copy)
    users = sorted(recs["user_id"].unique())[:20]
    response = _post(server, {"feature_service": "recommendations_v1", "entities": {"user_id": users}})
    assert response.status_code == 200, response.text
    answer = _columns(response)
    for i, user in enumerate(users):
        mine = recs[recs["user_id"] == user]
        assert answer["item_ids"]["values"][i] == mine["item_id"].tolist()
        assert answer["sources"]["values"][i] == mine["source"].tolist()
        assert answer["run_id"]["values"][i] == mine["run_id"].iloc[0]
        np.testing.assert_allclose(answer["scores"]["values"][i], mine["score"], rtol=1e-6)  # Float32
    assert all(set(result["statuses"]) == {"PRESENT"} for result in answer.values())


def test_an_unknown_user_is_not_found_with_nulls_and_the_known_user_is_unaffected(served) -> None:
    _, copy, server = served
    known = _recommendations(copy)["user_id"].iloc[0]
    response = _post(
        server, {"feature_service": "recommendations_v1", "entities": {"user_id": [known, UNKNOWN_USER]}}
    )
    assert response.status_code == 200
    answer = _columns(response)
    assert answer["user_id"]["values"] == [known, UNKNOWN_USER]
    for name in ("item_ids", "scores", "sources", "run_id"):
        assert answer[name]["statuses"] == ["PRESENT", "NOT_FOUND"], name
        assert answer[name]["values"][1] is None, name


def test_a_stored_null_is_present_with_a_null_value(served) -> None:
    """PRESENT means the entity has a row; a feature whose value is null there comes back as null."""
    workspace, _, server = served
    items = pd.read_parquet(workspace.marts_dir / "dim_items.parquet")
    item = items[items["material"].isna()].iloc[0]
    answer = _columns(
        _post(server, {"feature_service": "item_text_v1", "entities": {"item_id": [item.item_id]}})
    )
    assert answer["material"] == {**answer["material"], "values": [None], "statuses": ["PRESENT"]}
    assert answer["title"]["values"] == [item.title]


BAD_REQUESTS = {
    # name: (raw body, headers, expected HTTP status, text the error carries)
    "unknown feature": (
        b'{"features": ["user_stats:no_such_feature"], "entities": {"user_id": ["U000001"]}}',
        {"Content-Type": "application/json"},
        500,
        "Feature no_such_feature not found in projection user_stats",
    ),
    "unknown feature view": (
        b'{"features": ["no_such_view:x"], "entities": {"user_id": ["U000001"]}}',
        {"Content-Type": "application/json"},
        404,
        "FeatureViewNotFoundException",
    ),
    "unknown feature service": (
        b'{"feature_service": "ranking_v9", "entities": {"user_id": ["U000001"]}}',
        {"Content-Type": "application/json"},
        404,
        "FeatureServiceNotFoundException",
    ),
    "missing join key": (
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U000001"]}}',
        {"Content-Type": "application/json"},
        500,
        "Missing join key values for keys: ['item_id', 'user_id']",
    ),
    "entity lists of different lengths": (
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U000001"], "item_id": ["I1", "I2"]}}',
        {"Content-Type": "application/json"},
        500,
        "All entity rows must have the same columns.",
    ),
    "malformed JSON": (
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U0',
        {"Content-Type": "application/json"},
        422,
        "json_invalid",
    ),
    "JSON without its content type": (
        b'{"feature_service": "recommendations_v1", "entities": {"user_id": ["U000001"]}}',
        {},
        422,
        "Input should be a valid dictionary",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_gets_a_clear_error_and_the_server_stays_up(served, case: str) -> None:
    _, copy, server = served
    body, headers, status, text = BAD_REQUESTS[case]
    response = requests.post(f"{server.url}/get-online-features", data=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert text in response.text
    _assert_server_still_serves(server, _recommendations(copy)["user_id"].iloc[0])


def test_an_oversized_request_is_answered_in_full_and_the_server_stays_up(served) -> None:
    """Feast's server has no size cap: 20,000 users in one request (~1 MB) are answered, all NOT_FOUND."""
    _, copy, server = served
    users = [f"X{i:07d}" for i in range(20_000)]
    response = _post(server, {"feature_service": "recommendations_v1", "entities": {"user_id": users}})
    assert response.status_code == 200
    assert _columns(response)["item_ids"]["statuses"] == ["NOT_FOUND"] * len(users)
    _assert_server_still_serves(server, _recommendations(copy)["user_id"].iloc[0])


def test_a_republication_is_served_at_once_without_a_restart(served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups answer throughout a publish, each user's list is old or new (never a mix), then new."""
    _, copy, server = served
    for key, value in copy.environ().items():  # publish exports the copy's paths; undo that afterwards
        monkeypatch.setenv(key, value)
    old = _recommendations(copy)
    users = sorted(old["user_id"].unique())[:10]
    old_lists = {u: old[old["user_id"] == u]["item_id"].tolist() for u in users}
    old_run = old["run_id"].iloc[0]
    # The new publication: every list reversed, under a new run id.
    new = old.drop(columns="run_id").assign(
        rank=lambda f: f.groupby("user_id")["rank"].transform("max") + 1 - f["rank"]
    )
    new_run = "freshness-check"
    new_lists = {u: old_lists[u][::-1] for u in users}
    as_of = pd.Timestamp(
        pd.read_parquet(copy.published_dir / "user_recommendations.parquet")["event_timestamp"].max()
    )
    pid = server.process.pid

    seen: list[tuple[float, dict[str, tuple[str, list[str]]]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def look_up() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = _post(
                        server,
                        {"feature_service": "recommendations_v1", "entities": {"user_id": users}},
                        session,
                    )
                except requests.RequestException as error:
                    failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                answer = _columns(response)
                rows = zip(answer["run_id"]["values"], answer["item_ids"]["values"], strict=True)
                seen.append((time.monotonic(), {u: row for u, row in zip(users, rows, strict=True)}))

    client = threading.Thread(target=look_up)
    client.start()
    try:
        time.sleep(0.5)
        publish.publish(copy, new, new_run, as_of)
        published_at = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        client.join(timeout=30)

    assert not failures, failures[:3]
    before = [answer for at, answer in seen if at < published_at]
    after = [answer for at, answer in seen if at > published_at + 0.05]
    assert len(before) >= 5 and len(after) >= 5, (len(before), len(after))
    for answer in (*before, *after):
        for user, (run_id, items) in answer.items():
            assert (run_id, items) in [(old_run, old_lists[user]), (new_run, new_lists[user])], user
    assert before[0] == {u: (old_run, old_lists[u]) for u in users}
    assert all(answer == {u: (new_run, new_lists[u]) for u in users} for answer in after)
    assert server.process.pid == pid and server.running() and server.healthy()
