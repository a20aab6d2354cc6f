"""The real-time path: POST /events pushes a shopper's event into their Feast session row, and the next
POST /recommend answer reflects it.

The unit part drives the pure pieces: `rerank` (a bought item leaves unless it is an expected repeat,
items similar to one viewed or carted move up, otherwise the ranker's order), the session merge (the
mart's window rule), and the request checks. The serving part starts the real server (what `make serve`
runs) on a copy of the scored tiny workspace with a token, and shows over HTTP that one pushed purchase
takes the item out of the next answer, one view moves a related item up, an unknown user gets the
popular items, and every bad event gets its 4xx, leaves the online row as it was and the server up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from scoring.events.log import EventLog
from scoring.events.session import Event, Session
from scoring.pipeline import publish
from scoring.serving.recommend_route import (
    RecommendRequest,
    RerankPolicy,
    parse_event,
    parse_recommend,
    rerank,
)
from scoring.serving.request_body import RequestProblem
from scoring.serving.server import (
    EVENTS,
    READ_ROUTES,
    RECOMMEND,
    WRITE_ROUTES,
    FeatureServer,
    ServingGuard,
)
from scoring.settings import Settings
from tests.conftest import LISTED_ONLY, online_lookup, realtime_copy

TOKEN = "aisle-realtime-token-8c2f41"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = RerankPolicy(view_weight=0.5, cart_weight=0.8, rebuy_min_repeat=0.0)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOUR = 3600


# ----- unit: the re-rank ----------------------------------------------------------------------------------
def _rerank(
    bought: list[bool] | None = None,
    viewed: list[float] | None = None,
    times_bought: list[int] | None = None,
    repeat: list[float] | None = None,
) -> list[int]:
    n = 5
    order = rerank(
        times_bought=np.array(times_bought or [0] * n),
        repeat=np.array(repeat or [0.0] * n),
        bought=np.array(bought or [False] * n),
        viewed_similarity=np.array(viewed or [0.0] * n),
        carted_similarity=np.zeros(n),
        policy=POLICY,
    )
    return [row.position for row in order]


def test_without_a_session_the_rankers_order_stands() -> None:
    assert _rerank() == [0, 1, 2, 3, 4]
    # The same similarity for every item moves nothing: only differences re-order.
    assert _rerank(viewed=[0.4] * 5) == [0, 1, 2, 3, 4]


def test_an_item_bought_in_the_session_leaves_unless_it_is_an_expected_repeat() -> None:
    assert _rerank(bought=[False, True, False, False, False]) == [0, 2, 3, 4]
    # Bought before the session and scored by the repeat source: the ranker expects a re-buy, so it stays.
    kept = _rerank(
        bought=[False, True, False, False, False], times_bought=[0, 3, 0, 0, 0], repeat=[0, 1.2, 0, 0, 0]
    )
    assert kept == [0, 1, 2, 3, 4]
    strict = rerank(
        np.array([0, 3, 0]),
        np.array([0.0, 0.1, 0.0]),
        np.array([False, True, False]),
        np.zeros(3),
        np.zeros(3),
        RerankPolicy(0.5, 0.8, rebuy_min_repeat=0.5),
    )
    assert [row.position for row in strict] == [0, 2]  # its repeat score is under the setting's bar


def test_items_like_one_viewed_move_up_and_say_why() -> None:
    order = rerank(
        times_bought=np.zeros(5),
        repeat=np.zeros(5),
        bought=np.zeros(5, dtype=bool),
        viewed_similarity=np.array([0.1, 0.1, 0.1, 0.1, 0.9]),
        carted_similarity=np.zeros(5),
        policy=POLICY,
        viewed_nearest=["V"] * 5,
        carted_nearest=[None] * 5,
    )
    # Position 4 stands 0.8 above the median similarity (0.1): it scores 1 - 4/5 + 0.5 * 0.8 = 0.6,
    # past position 3 (0.4) and level with position 2 (0.6, where the earlier one wins).
    assert [row.position for row in order] == [0, 1, 2, 4, 3]
    moved = next(row for row in order if row.position == 4)
    assert (moved.moved_by, moved.related_to) == ("viewed", "V")
    assert all(row.moved_by is None for row in order if row.position != 4)
    # A cart counts more than a view of an equally similar item.
    carted = rerank(
        np.zeros(3), np.zeros(3), np.zeros(3, dtype=bool), np.zeros(3), np.array([0, 0, 0.9]), POLICY
    )
    assert [row.position for row in carted] == [2, 0, 1]


# ----- unit: the session merge ----------------------------------------------------------------------------
def _event(item: str, kind: str, hours_ago: float) -> Event:
    return Event("U1", item, kind, NOW - timedelta(hours=hours_ago))


def test_the_session_merge_keeps_each_item_once_newest_first_within_the_window() -> None:
    window = 24 * HOUR
    session = Session()
    for item, kind, hours_ago in [("A", "view", 30), ("B", "view", 5), ("A", "view", 2), ("B", "cart", 1)]:
        session = session.merged(_event(item, kind, hours_ago), window)
    assert session.items("viewed") == ["A", "B"]  # A's view 2 h ago is its latest; the 30 h one is gone
    assert session.items("carted") == ["B"] and session.items("bought") == []
    assert session.last_event_at == int((NOW - timedelta(hours=1)).timestamp())
    # A late event (before the session's last one) lands by its own time; an old one falls out at once.
    late = session.merged(_event("C", "purchase", 3), window).merged(_event("D", "view", 40), window)
    assert late.items("bought") == ["C"] and "D" not in late.items("viewed")
    assert late.last_event_at == session.last_event_at
    # A day later the whole old session has aged out of the window.
    assert session.merged(_event("E", "view", -30), window).items("viewed") == ["E"]
    assert session.live(NOW + timedelta(hours=30), window).empty


def test_a_session_round_trips_through_the_pushed_frame() -> None:
    session = Session().merged(_event("A", "cart", 1), 24 * HOUR)
    row = session.frame("U1").iloc[0].to_dict()
    assert row["carted_item_ids"] == ["A"] and row["viewed_item_ids"] == []
    assert row["event_timestamp"] == pd.Timestamp(NOW - timedelta(hours=1))
    assert Session.from_online(row) == session


# ----- unit: request checks -------------------------------------------------------------------------------
BAD_EVENTS: dict[str, tuple[bytes, int, str]] = {
    "empty body": (b"", 400, "the body is empty"),
    "malformed JSON": (b'{"user_id": "U1"', 400, "not valid JSON"),
    "NaN": (b'{"user_id": "U1", "item_id": "I1", "event_type": "view", "event_at": NaN}', 400, "NaN"),
    "a list": (b'["view"]', 422, "must be a JSON object"),
    "unknown field": (
        b'{"user_id": "U1", "item_id": "I1", "event_type": "view", "price": 3}',
        422,
        'unknown field "price"',
    ),
    "no user": (b'{"item_id": "I1", "event_type": "view"}', 422, "`user_id` is missing"),
    "user a number": (
        b'{"user_id": 7, "item_id": "I1", "event_type": "view"}',
        422,
        "`user_id` must be a string",
    ),
    "blank item": (b'{"user_id": "U1", "item_id": " ", "event_type": "view"}', 422, "`item_id` is empty"),
    "unknown type": (
        b'{"user_id": "U1", "item_id": "I1", "event_type": "click"}',
        422,
        "`event_type` must be",
    ),
    "type null": (b'{"user_id": "U1", "item_id": "I1", "event_type": null}', 422, "not null"),
    "time a number": (
        b'{"user_id": "U1", "item_id": "I1", "event_type": "view", "event_at": 1700000000}',
        422,
        "`event_at` must be an ISO-8601 time",
    ),
    "time unreadable": (
        b'{"user_id": "U1", "item_id": "I1", "event_type": "view", "event_at": "yesterday"}',
        422,
        "is not an ISO-8601 time",
    ),
    "time in the future": (
        b'{"user_id": "U1", "item_id": "I1", "event_type": "view", "event_at": "2026-11-30T13:00:00Z"}',
        422,
        "3,600 s ahead of the server's clock",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_a_bad_event_is_refused_with_its_status_and_what_is_wrong(case: str) -> None:
    body, status, detail = BAD_EVENTS[case]
    with pytest.raises(RequestProblem) as refused:
        parse_event(body, NOW, max_future_s=300)
    assert refused.value.status == status and detail in refused.value.detail, refused.value.detail


def test_a_good_event_is_parsed_in_utc_to_the_second() -> None:
    body = (
        b'{"user_id": " U1 ", "item_id": "I1", "event_type": "cart", '
        b'"event_at": "2026-11-30T12:04:00.5+01:00"}'
    )
    assert parse_event(body, NOW, 300) == Event("U1", "I1", "cart", datetime(2026, 11, 30, 11, 4, tzinfo=UTC))
    # Four minutes ahead is within the skew; no time means now.
    assert parse_event(b'{"user_id": "U1", "item_id": "I1", "event_type": "view"}', NOW, 300).event_at == NOW
    ahead = b'{"user_id": "U1", "item_id": "I1", "event_type": "view", "event_at": "2026-11-30T12:04:00"}'
    assert parse_event(ahead, NOW, 300).event_at == NOW + timedelta(minutes=4)


def test_recommend_requests_are_checked() -> None:
    assert parse_recommend(b'{"user_id": "U1"}', 100, 20) == RecommendRequest("U1", 20)
    assert parse_recommend(b'{"user_id": "U1", "k": 5}', 100, 20) == RecommendRequest("U1", 5)
    for body, detail in [
        (b'{"user_id": "U1", "k": 0}', "`k` must be a whole number from 1 to 100"),
        (b'{"user_id": "U1", "k": true}', "not true"),
        (b'{"k": 5}', "`user_id` is missing"),
        (b'{"user_id": "U1", "n": 5}', 'unknown field "n"'),
    ]:
        with pytest.raises(RequestProblem, match=".") as refused:
            parse_recommend(body, 100, 20)
        assert refused.value.status == 422 and detail in refused.value.detail


def _through_guard(token: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bool]:
    """(status, body, whether the app behind was reached) of a POST through the real guard."""
    reached: list[str] = []
    sent: list[dict] = []

    async def app(scope: dict, receive, send) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    guard = ServingGuard(app, token=token, max_request_bytes=2048, max_entities=10)
    asyncio.run(guard({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send))
    return sent[0]["status"], sent[1]["body"], bool(reached)


def test_events_is_a_write_route_and_recommend_a_read_route() -> None:
    assert EVENTS in WRITE_ROUTES and RECOMMEND in READ_ROUTES
    status, body, reached = _through_guard("", "/events", [(b"authorization", b"Bearer anything")])
    assert (status, reached) == (403, False) and b"read-only" in body
    assert _through_guard(TOKEN, "/events", [])[::2] == (401, False)
    authorized = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert _through_guard(TOKEN, "/events", authorized)[::2] == (200, True)
    assert _through_guard("", "/recommend", [])[::2] == (200, True)


# ----- the real server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def realtime(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Path, FeatureServer]]:
    """(the serving copy, the run folder, the real server on the copy with write routes open to TOKEN)."""
    workspace, run_dir = scored_workspace
    copy = realtime_copy(workspace, run_dir, tmp_path_factory.mktemp("realtime"), serve_token=TOKEN)
    with FeatureServer(copy) as server:
        yield copy, run_dir, server


def _recommend(server: FeatureServer, user: str, k: int = 10) -> dict:
    response = requests.post(f"{server.url}/recommend", json={"user_id": user, "k": k}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _event_post(server: FeatureServer, body: dict | bytes, headers: dict | None = AUTH) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{server.url}/events",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def _session_row(server: FeatureServer, user: str) -> dict:
    """The user's online session row, as Feast's own lookup answers it."""
    return {
        name: values[0]
        for name, values in online_lookup(server.url, "session_v1", {"user_id": [user]}).items()
    }


def _pool(settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(settings.published_dir / publish.CANDIDATES_FILE).sort_values(["user_id", "rank"])


def _ids(answer: dict) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


def test_a_pushed_purchase_takes_the_item_out_of_the_next_answer(realtime) -> None:
    settings, _, server = realtime
    pool = _pool(settings)
    fresh = pool[(pool["rank"] <= 3) & (pool["times_bought"] == 0)].iloc[0]
    user, item = fresh["user_id"], fresh["item_id"]
    before = _recommend(server, user)
    assert before["answered_from"] == "published" and item in _ids(before)
    assert before["run_id"] == fresh["run_id"]

    response = _event_post(server, {"user_id": user, "item_id": item, "event_type": "purchase"})
    assert response.status_code == 200, response.text
    assert response.json()["stored"]["item_id"] == item
    assert response.json()["session"]["bought_item_ids"] == [item]
    assert _session_row(server, user)["bought_item_ids"] == [item]

    after = _recommend(server, user)
    assert after["answered_from"] == "session"
    assert item not in _ids(after) and len(after["items"]) == 10


def test_an_expected_repeat_stays_after_it_is_bought(realtime) -> None:
    settings, _, server = realtime
    pool = _pool(settings)
    repeats = pool[(pool["rank"] <= 5) & (pool["times_bought"] > 0)]
    if repeats.empty:
        pytest.skip("no user of the tiny shop has a past purchase among their top candidates")
    user, item = repeats.iloc[0]["user_id"], repeats.iloc[0]["item_id"]
    assert (
        _event_post(server, {"user_id": user, "item_id": item, "event_type": "purchase"}).status_code == 200
    )
    assert item in _ids(_recommend(server, user))


def test_a_view_moves_related_items_up(realtime) -> None:
    settings, run_dir, server = realtime
    pool = _pool(settings)
    items = pd.read_parquet(run_dir / "items.parquet")["item_id"].tolist()
    vectors = np.load(run_dir / "item_embeddings.npy")
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {item: i for i, item in enumerate(items)}
    # A user, and the (viewed item, lower-half candidate) pair whose similarity stands out most from the
    # viewed item's typical similarity to the user's candidates: that candidate must move up.
    user = pool.groupby("user_id").size().idxmax()
    theirs = pool[pool["user_id"] == user]["item_id"].tolist()
    k = len(theirs)
    sims = vectors[[row[item] for item in items]] @ vectors[[row[item] for item in theirs]].T
    margin = sims - np.median(sims, axis=1, keepdims=True)
    margin[:, : k // 2] = -np.inf  # only candidates in the lower half
    for i, item in enumerate(items):
        if item in theirs:
            margin[i, theirs.index(item)] = -np.inf  # the item itself does not count
    best_viewed, best_target = np.unravel_index(np.argmax(margin), margin.shape)
    viewed, target = items[best_viewed], theirs[best_target]
    before = _ids(_recommend(server, user, k))

    assert _event_post(server, {"user_id": user, "item_id": viewed, "event_type": "view"}).status_code == 200
    after = _recommend(server, user, k)
    assert after["answered_from"] == "session"
    assert _ids(after).index(target) < before.index(target), (before, _ids(after))
    assert sorted(_ids(after)) == sorted(before)  # nothing bought: the same items, re-ordered
    reason = after["items"][_ids(after).index(target)]["reason"]
    assert reason.startswith("Like ") and reason.endswith("which you just viewed"), reason


def test_an_unknown_user_gets_the_popular_items(realtime) -> None:
    settings, run_dir, server = realtime
    answer = _recommend(server, "U-never-seen", k=5)
    assert answer["answered_from"] == "popular" and len(answer["items"]) == 5
    stats = pd.read_parquet(settings.marts_dir / "fct_item_stats.parquet")
    latest = stats.sort_values("event_timestamp").groupby("item_id").tail(1)
    catalogue = set(pd.read_parquet(run_dir / "items.parquet")["item_id"])
    expected = latest[latest["item_id"].isin(catalogue)].sort_values(
        ["units_30d", "distinct_buyers", "item_id"], ascending=[False, False, True]
    )
    assert _ids(answer) == expected["item_id"].head(5).tolist()
    assert all(item["reason"].startswith("Popular: ") for item in answer["items"])


def test_a_user_without_candidates_gets_their_published_list(realtime) -> None:
    settings, _, server = realtime
    recs = pd.read_parquet(settings.published_recommendations)
    listed = recs[(recs["user_id"] == LISTED_ONLY) & (recs["list"] == "top")].sort_values("rank")
    assert len(listed) >= 3 and LISTED_ONLY not in set(_pool(settings)["user_id"])
    answer = _recommend(server, LISTED_ONLY, k=3)
    assert answer["answered_from"] == "published"
    assert _ids(answer) == listed["item_id"].head(3).tolist()
    assert [item["reason"] for item in answer["items"]] == listed["reason"].head(3).tolist()
    assert answer["run_id"] == listed["run_id"].iloc[0]


def _bad_events(item: str) -> dict[str, tuple[bytes, dict | None, int, str]]:
    """name: (body, headers, status, text the detail carries), for a user whose row must not change."""
    good = {"user_id": "U-bad-events", "item_id": item, "event_type": "view"}
    future = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "no token": (json.dumps(good).encode(), None, 401, "needs the header"),
        "wrong token": (
            json.dumps(good).encode(),
            {"Authorization": "Bearer nope"},
            401,
            "wrong bearer token",
        ),
        "not JSON": (b'{"user_id": "U-bad-events",', AUTH, 400, "not valid JSON"),
        "unknown field": (json.dumps({**good, "qty": 2}).encode(), AUTH, 422, 'unknown field "qty"'),
        "wrong type": (json.dumps({**good, "item_id": 42}).encode(), AUTH, 422, "`item_id` must be a string"),
        "unknown event type": (
            json.dumps({**good, "event_type": "like"}).encode(),
            AUTH,
            422,
            "`event_type`",
        ),
        "future time": (
            json.dumps({**good, "event_at": future}).encode(),
            AUTH,
            422,
            "ahead of the server's",
        ),
        "unknown item": (
            json.dumps({**good, "item_id": "NOPE-1"}).encode(),
            AUTH,
            422,
            "not in the catalogue",
        ),
        "quantity not whole": (
            json.dumps({**good, "quantity": 1.5}).encode(),
            AUTH,
            422,
            "`quantity` must be a whole number",
        ),
        "price not positive": (
            json.dumps({**good, "unit_price": 0}).encode(),
            AUTH,
            422,
            "`unit_price` must be a number above 0",
        ),
        "oversized": (json.dumps({**good, "pad": "x" * 4000}).encode(), AUTH, 413, "over the cap of 2,048"),
    }


def test_bad_events_get_their_4xx_write_nothing_and_the_server_keeps_answering(realtime) -> None:
    settings, _, server = realtime
    user = "U-bad-events"
    item = _pool(settings)["item_id"].iloc[0]
    first = _event_post(server, {"user_id": user, "item_id": item, "event_type": "cart"})
    assert first.status_code == 200, first.text
    row = _session_row(server, user)
    assert row["carted_item_ids"] == [item]
    log = EventLog(settings.event_log_path)
    logged = log.count()
    assert logged >= 1
    for case, (body, headers, status, detail) in _bad_events(item).items():
        response = _event_post(server, body, headers)
        assert response.status_code == status, (case, response.text)
        assert detail in response.json()["detail"], (case, response.json())
        assert _session_row(server, user) == row, case
        assert log.count() == logged, f"{case}: a refused event was logged"
        assert server.running() and _recommend(server, user, 3)["items"], case


def test_recommend_answers_in_milliseconds(realtime) -> None:
    settings, _, server = realtime
    users = _pool(settings)["user_id"].unique()[:20].tolist() + ["U-never-seen"]
    with requests.Session() as http:
        for user in users:  # warm each worker's connection to the online store
            http.post(f"{server.url}/recommend", json={"user_id": user}, timeout=30)
        times = []
        for _ in range(5):
            for user in users:
                start = time.perf_counter()
                response = http.post(f"{server.url}/recommend", json={"user_id": user, "k": 10}, timeout=30)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    print(f"/recommend over HTTP: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(times)} requests)")
    assert p50 < 50, (p50, p95)


def test_a_new_publication_is_served_without_a_restart(realtime) -> None:
    """The last test of the module: it republishes the copy's candidates with one user's order reversed."""
    settings, _, server = realtime
    path = settings.published_dir / publish.CANDIDATES_FILE
    pool = pd.read_parquet(path)
    user = pool["user_id"].iloc[0]
    theirs = pool["user_id"] == user
    pool.loc[theirs, "rank"] = pool.loc[theirs, "rank"].max() + 1 - pool.loc[theirs, "rank"]
    expected = pool[theirs].sort_values("rank")["item_id"].head(5).tolist()
    assert _ids(_recommend(server, user, 5)) != expected
    pool.to_parquet(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)  # atomically, as publishing does
    deadline = time.monotonic() + 30
    in_a_row = 0
    while in_a_row < 8:  # each request on a new connection, so every worker is asked
        assert time.monotonic() < deadline, "the new publication was not served within 30 s"
        in_a_row = in_a_row + 1 if _ids(_recommend(server, user, 5)) == expected else 0
        time.sleep(0.1)
