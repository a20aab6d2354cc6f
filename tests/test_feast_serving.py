"""The real feature server (what `make serve` runs: Feast's app behind scoring/serving/server.py's guard) on
127.0.0.1, over real HTTP.

Each server runs on a copy of the scored workspace's live build (registry), online store and
publication, so writes and the freshness test's republication never touch the session's workspace.
Values are checked against the dbt marts and the published recommendations Parquet; the server is
read-only by default (a forged write is refused and changes nothing), a bearer token unlocks the write
routes, bad and oversized requests get a 4xx with a `{"detail": ...}` body and leave the server up,
and a republication is served at once, without a restart.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from scoring.pipeline import publish
from scoring.pipeline.run_folder import swap_link
from scoring.serving.server import FeatureServer
from scoring.settings import Settings
from tests.conftest import tiny_settings

UNKNOWN_USER = "U999999"
TOKEN = "aisle-test-token-5d1c0b7e"
WRITE_ROUTES = ["/write-to-online-store", "/push", "/materialize", "/materialize-incremental"]


def _serving_copy(workspace: Settings, data_dir: Path, **overrides) -> Settings:
    """A workspace of its own for a server: the live build (registry), the online store, the publication."""
    copy = tiny_settings(data_dir, **overrides)
    live = workspace.live_dir.resolve()
    shutil.copytree(live, copy.builds_dir / live.name)
    swap_link(copy.live_dir, copy.builds_dir / live.name)
    shutil.copytree(workspace.feast_dir, copy.feast_dir, ignore=shutil.ignore_patterns("serve-*.log"))
    shutil.copytree(workspace.published_dir, copy.published_dir)
    return copy


@pytest.fixture(scope="module")
def served(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Settings, FeatureServer]]:
    """(the scored workspace, its serving copy, the running server on the copy): the default settings,
    so no token (read-only) and the default caps."""
    workspace, _ = scored_workspace
    copy = _serving_copy(workspace, tmp_path_factory.mktemp("served"))
    assert not copy.serve_token.get_secret_value()
    with FeatureServer(copy) as server:
        yield workspace, copy, server


@pytest.fixture(scope="module")
def served_with_token(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, FeatureServer]]:
    """(its copy, a server on its own port) with write routes open to TOKEN and caps set low."""
    workspace, _ = scored_workspace
    copy = _serving_copy(
        workspace,
        tmp_path_factory.mktemp("served-with-token"),
        serve_token=TOKEN,
        max_request_bytes=20_000,
        max_entities_per_request=50,
    )
    with FeatureServer(copy) as server:
        yield copy, server


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
    """The published long-format file's top lists, one row per (user, rank)."""
    recs = pd.read_parquet(settings.published_recommendations)
    return recs[recs["list"] == "top"].sort_values(["user_id", "rank"])


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


@pytest.mark.parametrize(
    "request_body",
    [
        {"feature_service": "ranking_v1"},
        {"features": ["user_stats:orders_count", "item_stats:distinct_buyers"], "full_feature_names": True},
    ],
    ids=["feature service", "feature list, full names"],
)
def test_a_lookup_answers_exactly_what_feasts_own_lookup_answers(served, request_body: dict) -> None:
    """The route runs Feast's lookup on the loop (lookup_route.py): its answer is Feast's, feature for
    feature, known and unknown entities alike."""
    from feast.feature_server_utils import convert_response_to_dict

    from scoring.features import feature_store

    workspace, copy, server = served
    pairs = _latest(workspace, "fct_user_item_stats", ["user_id", "item_id"]).sample(n=5, random_state=4)
    entities = {
        "user_id": [*pairs.index.get_level_values(0), UNKNOWN_USER],
        "item_id": [*pairs.index.get_level_values(1), "I99999"],
    }
    response = _post(server, {**request_body, "entities": entities})
    assert response.status_code == 200, response.text
    store = feature_store.store(copy)
    features = request_body.get("features") or store.get_feature_service(request_body["feature_service"])
    expected = store.get_online_features(
        features=features,
        entity_rows=entities,
        full_feature_names=request_body.get("full_feature_names", False),
    )
    # Feast orders a service's views as its registry cache iterates them, which differs between
    # processes: compared per feature, every value, status and timestamp.
    answer = _columns(response)
    own = json.loads(json.dumps(convert_response_to_dict(expected.proto)))
    assert answer == dict(zip(own["metadata"]["feature_names"], own["results"], strict=True))
    assert len(answer) == len(own["results"]) > 2
    assert ("user_stats__orders_count" in answer) == bool(request_body.get("full_feature_names"))


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


def _served_list(server: FeatureServer, user: str) -> tuple[str, list[str]]:
    """(run_id, item_ids) the server answers for one user."""
    response = _post(server, {"feature_service": "recommendations_v1", "entities": {"user_id": [user]}})
    assert response.status_code == 200, response.text
    answer = _columns(response)
    return answer["run_id"]["values"][0], answer["item_ids"]["values"][0]


def _forged_writes(user: str) -> dict[str, dict]:
    """A probe's body for each write route: the first one replaces the user's list with two forged ids."""
    return {
        "/write-to-online-store": {
            "feature_view_name": "user_recommendations",
            "df": {
                "user_id": [user],
                "item_ids": [["EVIL1", "EVIL2"]],
                "scores": [[9.0, 9.0]],
                "sources": [["forged", "forged"]],
                "reasons": [["forged", "forged"]],
                "discover_item_ids": [["EVIL3"]],
                "discover_scores": [[9.0]],
                "discover_reasons": [["forged"]],
                "run_id": ["forged"],
                "event_timestamp": ["2030-01-01T00:00:00"],
            },
        },
        "/push": {"push_source_name": "user_recommendations_push", "df": {"user_id": [user]}},
        "/materialize": {},
        "/materialize-incremental": {"end_ts": "2030-01-01T00:00:00"},
    }


def _assert_detail(response: requests.Response, *texts: str) -> None:
    """A 4xx answers `{"detail": ...}` in JSON, carrying each of `texts`."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    detail = response.json()["detail"]
    for text in texts:
        assert text in str(detail), (text, detail)


@pytest.mark.parametrize("authorization", [None, "Bearer guessed-token", f"Bearer {TOKEN}"])
def test_a_read_only_server_refuses_every_write_and_keeps_serving_the_published_list(
    served, authorization: str | None
) -> None:
    """The forged-write probe against the default server: 403 on each write route, with or without a
    token (no token is configured, so none can be right), and the user's list is unchanged."""
    _, copy, server = served
    recs = _recommendations(copy)
    user = recs["user_id"].iloc[0]
    published = (recs["run_id"].iloc[0], recs.loc[recs["user_id"] == user, "item_id"].tolist())
    assert _served_list(server, user) == published
    headers = {"Authorization": authorization} if authorization else {}
    for route, body in _forged_writes(user).items():
        response = requests.post(f"{server.url}{route}", json=body, headers=headers, timeout=30)
        assert response.status_code == 403, (route, response.text)
        _assert_detail(response, "read-only", "AISLE_SERVE_TOKEN")
    assert _served_list(server, user) == published


def test_with_a_token_a_write_needs_exactly_that_bearer_token(served_with_token) -> None:
    """401 without the header, with a wrong token or another scheme, and nothing changes; with the
    token the forged list is written and served."""
    copy, server = served_with_token
    recs = _recommendations(copy)
    user = recs["user_id"].iloc[0]
    published = (recs["run_id"].iloc[0], recs.loc[recs["user_id"] == user, "item_id"].tolist())
    assert _served_list(server, user) == published
    writes = _forged_writes(user)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        for route, body in writes.items():
            response = requests.post(f"{server.url}{route}", json=body, headers=headers, timeout=30)
            assert response.status_code == 401, (route, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            _assert_detail(response, "token")
    assert _served_list(server, user) == published

    right = {"Authorization": f"Bearer {TOKEN}"}
    response = requests.post(
        f"{server.url}/write-to-online-store",
        json=writes["/write-to-online-store"],
        headers=right,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert _served_list(server, user) == ("forged", ["EVIL1", "EVIL2"])
    # An authorized write Feast cannot carry out is the caller's error (422), not the server's (500).
    response = requests.post(f"{server.url}/materialize", json={}, headers=right, timeout=30)
    assert response.status_code == 422, response.text
    _assert_detail(response, "start_ts and end_ts are required")
    assert server.healthy()


_JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = {
    # name: (method, path, raw body, headers, expected HTTP status, text the detail carries)
    "unknown feature": (
        "POST",
        "/get-online-features",
        b'{"features": ["user_stats:no_such_feature"], "entities": {"user_id": ["U000001"]}}',
        _JSON,
        422,
        "Feature no_such_feature not found in projection user_stats",
    ),
    "unknown feature view": (
        "POST",
        "/get-online-features",
        b'{"features": ["no_such_view:x"], "entities": {"user_id": ["U000001"]}}',
        _JSON,
        404,
        "no_such_view",
    ),
    "unknown feature service": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "ranking_v9", "entities": {"user_id": ["U000001"]}}',
        _JSON,
        404,
        "Feature service ranking_v9 does not exist",
    ),
    "empty feature service": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "", "entities": {"user_id": ["U000001"]}}',
        _JSON,
        422,
        "`feature_service` must name a feature service",
    ),
    "neither a feature service nor features": (
        "POST",
        "/get-online-features",
        b'{"entities": {"user_id": ["U000001"]}}',
        _JSON,
        422,
        "name a `feature_service`",
    ),
    "malformed feature reference": (
        "POST",
        "/get-online-features",
        b'{"features": ["orders_count"], "entities": {"user_id": ["U000001"]}}',
        _JSON,
        422,
        "must read '<feature_view>:<feature>'",
    ),
    "missing join key": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U000001"]}}',
        _JSON,
        422,
        "Missing join key values for keys: ['item_id', 'query', 'user_id']",
    ),
    "entity lists of different lengths": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U000001"], "item_id": ["I1", "I2"]}}',
        _JSON,
        422,
        "every entity list must have the same length",
    ),
    "entities null": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "recommendations_v1", "entities": null}',
        _JSON,
        422,
        "`entities` must be a non-empty object",
    ),
    "empty entity lists": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "recommendations_v1", "entities": {"user_id": []}}',
        _JSON,
        422,
        "the entity lists are empty",
    ),
    "NaN in the body": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "recommendations_v1", "entities": {"user_id": [NaN]}}',
        _JSON,
        422,
        "NaN is not a JSON number",
    ),
    "Infinity in the body": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U1"], "item_id": [-Infinity]}}',
        _JSON,
        422,
        "-Infinity is not a JSON number",
    ),
    "a null entity id": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "recommendations_v1", "entities": {"user_id": ["U000001", null]}}',
        _JSON,
        422,
        "an entity value is a string or an integer",
    ),
    "malformed JSON": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "ranking_v1", "entities": {"user_id": ["U0',
        _JSON,
        422,
        "the body is not valid JSON",
    ),
    "a JSON array": ("POST", "/get-online-features", b"[1, 2]", _JSON, 422, "must be a JSON object"),
    "JSON without its content type": (
        "POST",
        "/get-online-features",
        b'{"feature_service": "recommendations_v1", "entities": {"user_id": ["U000001"]}}',
        {},
        422,
        "Content-Type: application/json",
    ),
    "materialize with an empty body": ("POST", "/materialize", b"{}", _JSON, 403, "read-only"),
    "lookup with GET": ("GET", "/get-online-features", b"", {}, 405, "GET is not allowed"),
    # Feast's vector search body: Aisle's product search replaced Feast's /search (test_search_serving.py).
    "vector search": (
        "POST",
        "/search",
        b'{"features": ["item_text:title"], "query": [0.1, 0.2], "top_k": 3}',
        _JSON,
        422,
        'unknown field "features"',
    ),
    # Feast serves these, Aisle's allow-list does not.
    "documents": ("POST", "/retrieve-online-documents", b"{}", _JSON, 404, "no route"),
    "chat page": ("GET", "/chat", b"", {}, 404, "no route /chat"),
    "openapi schema": ("GET", "/openapi.json", b"", {}, 404, "no route"),
    "a route no one serves": ("POST", "/get-online-features/", b"{}", _JSON, 404, "no route"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_gets_a_clear_4xx_and_the_server_stays_up(served, case: str) -> None:
    _, copy, server = served
    method, path, body, headers, status, text = BAD_REQUESTS[case]
    response = requests.request(method, f"{server.url}{path}", data=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    _assert_detail(response, text)
    _assert_server_still_serves(server, _recommendations(copy)["user_id"].iloc[0])


def _chunks(total: int) -> Iterator[bytes]:
    """A lookup body of about `total` bytes, sent chunked: requests sets no Content-Length for it."""
    yield b'{"feature_service": "recommendations_v1", "entities": {"user_id": ["'
    for _ in range(total // 10_000):
        yield b"A" * 10_000
    yield b'"]}}'


def test_a_body_over_the_byte_cap_is_refused_with_413_with_or_without_content_length(served) -> None:
    _, copy, server = served
    cap = copy.max_request_bytes
    assert cap == 1_000_000  # the default
    one_big_id = b'{"feature_service": "recommendations_v1", "entities": {"user_id": ["%s"]}}' % (b"A" * cap)
    with requests.Session() as session:
        for body in (one_big_id, _chunks(2 * cap)):
            response = session.post(f"{server.url}/get-online-features", data=body, headers=_JSON, timeout=30)
            assert response.status_code == 413, response.text[:300]
            _assert_detail(response, "1,000,000 bytes", "AISLE_MAX_REQUEST_BYTES")
        _assert_server_still_serves(server, _recommendations(copy)["user_id"].iloc[0])
    request = requests.Request("POST", f"{server.url}/get-online-features", data=_chunks(2 * cap)).prepare()
    assert "Content-Length" not in request.headers and request.headers["Transfer-Encoding"] == "chunked"


def test_a_lookup_over_the_entity_cap_is_refused_with_413_and_one_at_the_cap_is_answered(served) -> None:
    """50,000 users took Feast 2-4 s to answer; the cap (1,000 rows) refuses them in milliseconds."""
    _, copy, server = served
    cap = copy.max_entities_per_request
    assert cap == 1_000  # the default
    for rows in (cap + 1, 50_000):
        users = [f"X{i:07d}" for i in range(rows)]
        response = _post(server, {"feature_service": "recommendations_v1", "entities": {"user_id": users}})
        assert response.status_code == 413, response.text[:300]
        _assert_detail(
            response, f"{rows:,} entity rows", "the cap is 1,000", "AISLE_MAX_ENTITIES_PER_REQUEST"
        )
    users = [f"X{i:07d}" for i in range(cap)]
    response = _post(server, {"feature_service": "recommendations_v1", "entities": {"user_id": users}})
    assert response.status_code == 200
    assert _columns(response)["item_ids"]["statuses"] == ["NOT_FOUND"] * cap
    _assert_server_still_serves(server, _recommendations(copy)["user_id"].iloc[0])


def test_the_caps_come_from_the_settings(served_with_token) -> None:
    """The token server's copy sets 20,000 bytes and 50 rows; the caps apply to write routes too."""
    copy, server = served_with_token
    pairs = {"user_id": ["U000001"] * 51, "item_id": ["I00001"] * 51}
    response = _post(server, {"feature_service": "ranking_v1", "entities": pairs})
    assert response.status_code == 413
    _assert_detail(response, "51 entity rows", "the cap is 50")
    pairs = {key: values[:50] for key, values in pairs.items()}
    assert _post(server, {"feature_service": "ranking_v1", "entities": pairs}).status_code == 200
    response = requests.post(
        f"{server.url}/push",
        data=_chunks(30_000),
        headers={**_JSON, "Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 413
    _assert_detail(response, "20,000 bytes")
    assert server.healthy()


def test_a_republication_is_served_at_once_without_a_restart(
    served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
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
        publish.publish(copy, new, new_run, as_of, tmp_path)
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
