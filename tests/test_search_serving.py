"""POST /search: its request checks (in process), and the real server (what `make serve` runs) over HTTP.

The unit part drives `parse_search` with every class of bad body. The serving part starts the real
server on 127.0.0.1 on a copy of the scored tiny workspace, and checks that a head query (answered from
the published results) and a tail query (answered live) come back ranked, with reasons; that `k` and the
filters hold; that every bad request gets its 4xx with a message and the server answers after it; that
`/get-online-features` answers in the same server as before; that a server with no published run answers
503 for search while its lookups work; and that a newly published run is served without a restart.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from scoring.pipeline.run_folder import swap_link
from scoring.serving.request_body import RequestProblem
from scoring.serving.search_route import SearchRequest, parse_search
from scoring.serving.server import FeatureServer
from scoring.settings import Settings
from tests.conftest import tiny_settings

MAX_CHARS = 512
MAX_K = 100

# name: (raw body, HTTP status, text the detail carries)
BAD_BODIES: dict[str, tuple[bytes, int, str]] = {
    "empty body": (b"", 400, "the body is empty"),
    "blank body": (b" \n ", 400, "the body is empty"),
    "latin-1 body": ('{"query": "caf\xe9 mug"}'.encode("latin-1"), 400, "not UTF-8 text (byte 0xe9"),
    "malformed JSON": (b'{"query": "red mug"', 400, "the body is not valid JSON"),
    "NaN": (b'{"query": "mug", "k": NaN}', 400, "NaN is not a JSON number"),
    "a JSON array": (b'["red mug"]', 422, "must be a JSON object"),
    "a JSON string": (b'"red mug"', 422, "must be a JSON object"),
    "no query": (b'{"k": 5}', 422, "`query` is missing"),
    "unknown field": (b'{"query": "mug", "limit": 5}', 422, 'unknown field "limit"'),
    "query not a string": (b'{"query": 42}', 422, "`query` must be a string"),
    "query null": (b'{"query": null}', 422, "`query` must be a string"),
    "empty query": (b'{"query": ""}', 422, "the query is empty"),
    "blank query": (b'{"query": "  \\t "}', 422, "the query is empty"),
    "markup only": (b'{"query": "<script></script>"}', 422, "the query is empty"),
    "oversized query": (
        json.dumps({"query": "mugs" * 130}).encode(),
        422,
        "the query is 520 characters; the limit is 512",
    ),
    "lone surrogate": (b'{"query": "mug \\ud800"}', 422, "lone surrogate"),
    "user_id a number": (b'{"query": "mug", "user_id": 7}', 422, "`user_id` must be a string"),
    "k zero": (b'{"query": "mug", "k": 0}', 422, "`k` must be a whole number from 1 to 100"),
    "k too big": (b'{"query": "mug", "k": 101}', 422, "not 101"),
    "k fractional": (b'{"query": "mug", "k": 2.5}', 422, "not 2.5"),
    "k a string": (b'{"query": "mug", "k": "5"}', 422, 'not "5"'),
    "k a boolean": (b'{"query": "mug", "k": true}', 422, "not true"),
    "filters a list": (b'{"query": "mug", "filters": ["kitchen"]}', 422, "`filters` must be an object"),
    "unknown filter": (b'{"query": "mug", "filters": {"colour": "red"}}', 422, 'unknown filter "colour"'),
    "categories a string": (
        b'{"query": "mug", "filters": {"categories": "kitchen"}}',
        422,
        "`filters.categories` must be a non-empty list",
    ),
    "categories empty": (b'{"query": "mug", "filters": {"categories": []}}', 422, "non-empty list"),
    "category blank": (
        b'{"query": "mug", "filters": {"categories": ["kitchen", " "]}}',
        422,
        "a category is a non-empty string",
    ),
    "price negative": (b'{"query": "mug", "filters": {"min_price": -1}}', 422, "`filters.min_price` must"),
    "price a string": (b'{"query": "mug", "filters": {"max_price": "9"}}', 422, "`filters.max_price` must"),
    "price infinite": (b'{"query": "mug", "filters": {"max_price": 1e999}}', 422, "not Infinity"),
    "prices crossed": (
        b'{"query": "mug", "filters": {"min_price": 20, "max_price": 5}}',
        422,
        "is above `filters.max_price` (5)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_body_is_refused_with_its_status_and_what_is_wrong(case: str) -> None:
    body, status, text = BAD_BODIES[case]
    with pytest.raises(RequestProblem) as refused:
        parse_search(body, MAX_CHARS, MAX_K)
    assert refused.value.status == status
    assert text in refused.value.detail, refused.value.detail


def test_a_good_body_is_parsed_with_defaults_and_filters() -> None:
    assert parse_search(b'{"query": "Red  Mug"}', MAX_CHARS, MAX_K) == SearchRequest("Red  Mug", None, 10)
    # An empty user id is an anonymous shopper (the search log's contract); a UTF-8 BOM is tolerated.
    assert parse_search(b'\xef\xbb\xbf{"query": "mug", "user_id": ""}', MAX_CHARS, MAX_K).user_id is None
    body = {
        "query": "mug",
        "user_id": " U000002 ",
        "k": 100,
        "filters": {"categories": ["kitchen", "garden"], "min_price": 0, "max_price": 12.5},
    }
    wanted = parse_search(json.dumps(body).encode(), MAX_CHARS, MAX_K)
    assert wanted == SearchRequest("mug", "U000002", 100, ("kitchen", "garden"), 0.0, 12.5)
    assert wanted.filtered
    assert not parse_search(b'{"query": "mug", "filters": {}}', MAX_CHARS, MAX_K).filtered
    exactly = json.dumps({"query": "m" * MAX_CHARS}).encode()
    assert parse_search(exactly, MAX_CHARS, MAX_K).query == "m" * MAX_CHARS


# ----- the real server ------------------------------------------------------------------------------------
REASONS = {"lexical", "semantic", "popular", "bought_before"}


def _serving_copy(workspace: Settings, data_dir: Path, run_dir: Path | None) -> Settings:
    """A workspace of its own for a server: the live build (registry), the online store, the publication,
    and `runs/current` linked to `run_dir` (None: no run published yet)."""
    copy = tiny_settings(data_dir)
    live = workspace.live_dir.resolve()
    shutil.copytree(live, copy.builds_dir / live.name)
    swap_link(copy.live_dir, copy.builds_dir / live.name)
    shutil.copytree(workspace.feast_dir, copy.feast_dir, ignore=shutil.ignore_patterns("serve-*.log"))
    if run_dir is not None:
        shutil.copytree(workspace.published_dir, copy.published_dir)
        publish_run(copy, run_dir)
    return copy


def publish_run(settings: Settings, run_dir: Path) -> None:
    """Point the copy's runs/current at a run folder (outside it: read only), as `promote` does."""
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    link = settings.runs_dir / run_dir.name
    if not link.exists():
        link.symlink_to(run_dir.resolve())
    swap_link(settings.runs_dir / "current", link)


@pytest.fixture(scope="module")
def search_server(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Path, FeatureServer]]:
    """(the scored workspace, its run folder, the real server on a copy of it: default settings)."""
    workspace, run_dir = scored_workspace
    copy = _serving_copy(workspace, tmp_path_factory.mktemp("search-served"), run_dir)
    with FeatureServer(copy) as server:
        yield workspace, run_dir, server


def _search(server: FeatureServer, body: dict | bytes, **kwargs) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{server.url}/search", data=data, headers={"Content-Type": "application/json"}, timeout=60, **kwargs
    )


def _head(run_dir: Path) -> pd.DataFrame:
    """The run's head results (what it publishes): query, item_ids, scores, reasons."""
    return pd.read_parquet(run_dir / "search_results.parquet")


def _tail_query(workspace: Settings, run_dir: Path) -> str:
    """A logged query that is not a head query, so it is answered live."""
    log = pd.read_parquet(workspace.marts_dir / "fct_searches.parquet", columns=["query"])
    head = set(_head(run_dir)["query"])
    tail = sorted(set(log["query"].dropna()) - head - {""})
    assert tail, "the tiny demo log has no tail query"
    return tail[len(tail) // 2]


def _assert_ranked(answer: dict, k: int) -> None:
    items = answer["items"]
    assert 0 < len(items) <= k
    assert len({item["item_id"] for item in items}) == len(items)
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    for item in items:
        assert item["reasons"] and set(item["reasons"]) <= REASONS, item
        assert isinstance(item["title"], str) and item["title"]


def test_a_head_query_is_answered_from_the_published_results(search_server) -> None:
    _, run_dir, server = search_server
    head = _head(run_dir).iloc[0]
    typed = f"  {head['query'].upper()}  "  # normalised to the published key
    response = _search(server, {"query": typed, "k": 5})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["query"] == typed and answer["normalised_query"] == head["query"]
    assert answer["source"] == "precomputed" and answer["personalised"] is False
    assert answer["run_id"] == run_dir.name
    _assert_ranked(answer, 5)
    assert [item["item_id"] for item in answer["items"]] == list(head["item_ids"][:5])


def test_a_tail_query_is_answered_live_with_ranked_items_and_reasons(search_server) -> None:
    workspace, run_dir, server = search_server
    query = _tail_query(workspace, run_dir)
    response = _search(server, {"query": query})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["source"] == "live" and answer["normalised_query"] == query
    _assert_ranked(answer, 10)
    assert len(answer["items"]) == 10  # the default k; the catalogue has more than enough items
    assert any("lexical" in item["reasons"] or "semantic" in item["reasons"] for item in answer["items"])


@pytest.mark.parametrize("k", [1, 3, 25])
def test_k_is_honoured_for_head_and_tail(search_server, k: int) -> None:
    workspace, run_dir, server = search_server
    for query in (_head(run_dir)["query"].iloc[0], _tail_query(workspace, run_dir)):
        response = _search(server, {"query": query, "k": k})
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == k, query


def test_filters_are_honoured(search_server) -> None:
    workspace, run_dir, server = search_server
    query = _head(run_dir)["query"].iloc[0]
    items = pd.read_parquet(run_dir / "search_items.parquet")
    category = items["category"].dropna().value_counts().index[0]
    response = _search(server, {"query": query, "k": 20, "filters": {"categories": [category]}})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["source"] == "live"  # a filtered head query is answered live
    assert answer["items"] and {item["category"] for item in answer["items"]} == {category}

    low, high = items["price"].quantile([0.25, 0.75]).tolist()
    body = {"query": query, "k": 20, "filters": {"min_price": low, "max_price": high}}
    answer = _search(server, body).json()
    assert answer["items"] and all(low <= item["price"] <= high for item in answer["items"])

    nothing = {"query": query, "filters": {"categories": ["no such category"]}}
    response = _search(server, nothing)
    assert response.status_code == 200 and response.json()["items"] == []


def test_a_known_shopper_gets_a_personalised_answer(search_server) -> None:
    workspace, run_dir, server = search_server
    histories = pd.read_parquet(workspace.marts_dir / "fct_user_histories.parquet")
    user = histories.sort_values("event_timestamp")["user_id"].iloc[-1]
    for query in (_head(run_dir)["query"].iloc[0], _tail_query(workspace, run_dir)):
        answer = _search(server, {"query": query, "user_id": user}).json()
        assert answer["personalised"] is True, (query, answer)
        _assert_ranked(answer, 10)
        anonymous = _search(server, {"query": query, "user_id": "U999999"}).json()
        assert anonymous["personalised"] is False


def test_online_lookups_are_unchanged_in_the_same_server(search_server) -> None:
    workspace, _, server = search_server
    recs = (
        pd.read_parquet(workspace.published_recommendations)
        .query("list == 'top'")
        .sort_values(["user_id", "rank"])
    )
    user = recs["user_id"].iloc[0]
    response = requests.post(
        f"{server.url}/get-online-features",
        json={"feature_service": "recommendations_v1", "entities": {"user_id": [user]}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    names = body["metadata"]["feature_names"]
    answer = dict(zip(names, body["results"], strict=True))
    assert answer["item_ids"]["values"][0] == recs.loc[recs["user_id"] == user, "item_id"].tolist()
    assert answer["item_ids"]["statuses"] == ["PRESENT"]


def _assert_still_searches(server: FeatureServer, query: str) -> None:
    assert server.running() and server.healthy()
    response = _search(server, {"query": query, "k": 2})
    assert response.status_code == 200 and len(response.json()["items"]) == 2, response.text


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_search_gets_its_4xx_over_http_and_the_server_keeps_answering(search_server, case) -> None:
    _, run_dir, server = search_server
    body, status, text = BAD_BODIES[case]
    response = _search(server, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert text in response.json()["detail"], response.json()
    _assert_still_searches(server, _head(run_dir)["query"].iloc[0])


def test_other_methods_and_oversized_bodies_are_refused(search_server) -> None:
    _, run_dir, server = search_server
    response = requests.get(f"{server.url}/search", timeout=30)
    assert response.status_code == 405 and "GET is not allowed" in response.json()["detail"]
    huge = json.dumps({"query": "mug", "user_id": "U" * 1_100_000}).encode()
    response = _search(server, huge)
    assert response.status_code == 413 and "AISLE_MAX_REQUEST_BYTES" in response.json()["detail"]
    _assert_still_searches(server, _head(run_dir)["query"].iloc[0])


def _wait_for(server: FeatureServer, body: dict, accept, timeout_s: float = 90.0) -> dict:
    """Search until `accept(answer)` holds for 8 answers in a row (each on a new connection, so every
    worker is asked), and return the last answer."""
    deadline = time.monotonic() + timeout_s
    in_a_row, last = 0, None
    while time.monotonic() < deadline:
        response = _search(server, body)
        last = (response.status_code, response.json())
        in_a_row = in_a_row + 1 if accept(*last) else 0
        if in_a_row >= 8:
            return last[1]
        time.sleep(0.1 if in_a_row else 0.5)
    raise AssertionError(f"still not accepted after {timeout_s} s: {last}")


def test_before_a_run_is_published_search_is_503_then_each_new_run_is_served_without_a_restart(
    scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    workspace, run_dir = scored_workspace
    copy = _serving_copy(workspace, tmp_path_factory.mktemp("search-unpublished"), None)
    query = _head(run_dir)["query"].iloc[0]
    with FeatureServer(copy) as server:
        pid = server.process.pid
        response = _search(server, {"query": query})
        assert response.status_code == 503, response.text
        assert "no scoring run has been published" in response.json()["detail"]
        assert "make score" in response.json()["detail"]
        # Bad requests are still told what is wrong; lookups still answer.
        assert _search(server, b"{").status_code == 400
        lookup = requests.post(
            f"{server.url}/get-online-features",
            json={"feature_service": "item_text_v1", "entities": {"item_id": ["I00001"]}},
            timeout=30,
        )
        assert lookup.status_code == 200, lookup.text

        publish_run(copy, run_dir)
        first = _wait_for(server, {"query": query}, lambda status, answer: status == 200)
        assert first["run_id"] == run_dir.name and first["items"]

        # A new run is promoted: every worker swaps it in within seconds.
        again = copy.runs_dir / "republished"
        shutil.copytree(run_dir, again)
        manifest = json.loads((again / "manifest.json").read_text())
        (again / "manifest.json").write_text(json.dumps({**manifest, "run_id": "republished"}))
        swap_link(copy.runs_dir / "current", again)
        answer = _wait_for(
            server,
            {"query": query},
            lambda status, answer: status == 200 and answer["run_id"] == "republished",
        )
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in first["items"]]
        assert server.process.pid == pid and server.running()
