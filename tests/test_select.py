"""What the shopper gets: the top list (optionally diversified), the discover list of never-bought items,
and a reason per recommendation, on small frames; then the published and served lists of the real tiny
workspace, over Feast's HTTP feature server."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import requests

from retrieval.candidates import SOURCES
from scoring.pipeline import lists, publish
from scoring.pipeline.run_folder import swap_link
from scoring.ranking import explain, select
from scoring.serving.server import FeatureServer
from scoring.settings import Settings
from scoring.warehouse import tables
from tests.conftest import tiny_settings

REASON = re.compile(
    r"^(You bought this (once,|(twice|\d+ times), (last|most recently)) (today|yesterday|\d+ days ago)"
    r"|Often bought with .+, which you bought|(Similar to|New, like) .+, which you bought"
    r"|Popular this month)$"
)


def _ranked(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    """(user, item, score, category) rows with the columns the rank stage writes."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "score", "category"])
    return frame.assign(source="embedding", times_bought=0)


# One user: three strong items of category a, then one of b and one of c (relevance 1, .9, .8, .2, 0).
ONE_USER = _ranked(
    [
        ("u", "a1", 0.90, "a"),
        ("u", "a2", 0.85, "a"),
        ("u", "a3", 0.80, "a"),
        ("u", "b1", 0.50, "b"),
        ("u", "c1", 0.40, "c"),
    ]
)


def _items(top: pd.DataFrame, user: str = "u") -> list[str]:
    return top[top["user_id"] == user].sort_values("rank")["item_id"].tolist()


def test_the_plain_top_list_ranks_from_one_breaks_ties_by_item_and_keeps_the_columns() -> None:
    ranked = pd.concat(
        [ONE_USER, _ranked([("v", "z", 0.5, "a"), ("v", "y", 0.5, "b"), ("v", "x", 0.1, "a")])]
    )
    top = select.top_lists(ranked, 2, Settings())
    assert list(top.columns[:3]) == ["user_id", "item_id", "rank"]
    assert set(ranked.columns) <= set(top.columns)
    assert _items(top) == ["a1", "a2"] and _items(top, "v") == ["y", "z"]
    assert top.groupby("user_id")["rank"].apply(list).to_dict() == {"u": [1, 2], "v": [1, 2]}


def test_mmr_trades_relevance_for_categories_as_lambda_grows() -> None:
    def mmr(lam: float, n: int = 3) -> list[str]:
        settings = Settings(diversity="mmr", diversity_lambda=lam)
        return _items(select.top_lists(ONE_USER, n, settings))

    assert mmr(0.0, 5) == _items(select.top_lists(ONE_USER, 5, Settings()))  # λ = 0 is the plain ranking
    assert mmr(0.3) == ["a1", "a2", "a3"]  # b1's relevance (.2) is too far below a2's (.9) to win at .3
    assert mmr(0.7) == ["a1", "b1", "c1"]  # at .7 a new category beats a repeated one
    assert mmr(0.7, 5) == ["a1", "b1", "c1", "a2", "a3"]  # then the rest by relevance


def test_the_category_cap_holds_and_still_fills_the_list() -> None:
    def capped(cap: int, n: int) -> list[str]:
        return _items(select.top_lists(ONE_USER, n, Settings(diversity="category_cap", category_cap=cap)))

    assert capped(2, 4) == ["a1", "a2", "b1", "c1"]
    assert capped(1, 3) == ["a1", "b1", "c1"]
    assert capped(1, 5) == ["a1", "b1", "c1", "a2", "a3"]  # every category full: the best remaining fill it


def test_diversity_works_per_user_and_ignores_items_without_a_category() -> None:
    short = _ranked([("v", "n1", 0.9, None), ("v", "n2", 0.8, None), ("v", "a9", 0.1, "a")])
    ranked = pd.concat([ONE_USER, short], ignore_index=True)
    top = select.top_lists(ranked, 4, Settings(diversity="category_cap", category_cap=1))
    assert _items(top) == ["a1", "b1", "c1", "a2"]
    assert _items(top, "v") == ["n1", "n2", "a9"]  # fewer candidates than n: all of them; no category: no cap
    mmr = select.top_lists(ranked, 2, Settings(diversity="mmr", diversity_lambda=0.9))
    assert _items(mmr, "v") == ["n1", "n2"]  # items without a category are similar to nothing


def test_the_discover_list_holds_only_never_bought_items_best_first() -> None:
    ranked = ONE_USER.assign(times_bought=[2, 0, np.nan, 1, 0])
    discover = select.discover_lists(ranked, 2)
    assert _items(discover) == ["a2", "a3"]
    assert discover["rank"].tolist() == [1, 2]
    assert select.discover_lists(ranked, 0).empty


def _evidence() -> explain.Evidence:
    """u bought x and k; ten other shoppers bought x and y together, ten others p and q; nobody bought z,
    which is close to k in the embedding space; q and y are close to x."""
    purchases = [("u", "x"), ("u", "k")]
    purchases += [(f"s{i}", item) for i in range(10) for item in ("x", "y")]
    purchases += [(f"t{i}", item) for i in range(10) for item in ("p", "q")]
    item_ids = np.array(["k", "p", "q", "x", "y", "z"])
    vectors = np.eye(6, dtype=np.float32)
    vectors[2] = [0, 0, 0.6, 0.8, 0, 0]  # q: close to x
    vectors[4] = [0, 0, 0, 0.6, 0.8, 0]  # y: close to x
    vectors[5] = [0.8, 0, 0, 0.6, 0, 0]  # z: closer to k (0.8) than to x (0.6)
    return explain.Evidence(
        purchases=pd.DataFrame(purchases, columns=["user_id", "item_id"]),
        item_ids=item_ids,
        vectors=vectors,
        titles={"x": "Teapot", "y": "Tea Cosy", "z": "Milk Jug"},  # k has no title
    )


def _recs(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame[list(SOURCES)] = frame.reindex(columns=list(SOURCES)).fillna(0.0)
    frame["user_id"] = "u"
    return frame


def test_reasons_name_what_the_user_bought_and_why() -> None:
    recs = _recs(
        [
            {"item_id": "x", "times_bought": 3, "last_bought_days": 12.4, "repeat": 1.0},
            {"item_id": "k", "times_bought": 1, "last_bought_days": 1.5, "repeat": 1.0},
            {"item_id": "y", "times_bought": 0, "last_bought_days": np.nan, "embedding": 0.2, "popular": 0.5},
            {"item_id": "z", "times_bought": 0, "last_bought_days": np.nan, "als": 0.3},
            {"item_id": "p", "times_bought": 0, "last_bought_days": np.nan, "popular": 0.9},
            {"item_id": "q", "times_bought": 0, "last_bought_days": np.nan, "embedding": 0.1},
        ]
    ).set_index(pd.Index([10, 11, 12, 13, 14, 15]))
    reasons = explain.reasons(recs, _evidence(), popular_days=30, min_co_buyers=2)
    assert reasons.index.tolist() == recs.index.tolist()
    assert reasons.tolist() == [
        "You bought this 3 times, last 12 days ago",
        "You bought this once, yesterday",
        "Often bought with Teapot, which you bought",  # ten shoppers bought both: co-purchase first
        "New, like k, which you bought",  # nobody bought z: its nearest past item (k has no title: its id)
        "Popular this month",  # only the popular source proposed it
        "Similar to Teapot, which you bought",  # q's buyers never bought u's items
    ]
    assert all(REASON.match(reason) for reason in reasons)
    assert explain.bought_text(2, 0.4) == "You bought this twice, most recently today"
    assert explain.bought_text(4, 1.2) == "You bought this 4 times, most recently yesterday"
    assert explain.bought_text(2, np.nan) == "You bought this twice"  # the last date unknown: no time
    assert explain.kinds(reasons) == {
        "New, like": 1,
        "Often bought with": 1,
        "Popular": 1,
        "Similar to": 1,
        "You bought": 2,
    }


def test_a_shared_shopper_or_a_chance_overlap_is_not_often_bought_with() -> None:
    evidence = _evidence()
    recs = _recs([{"item_id": "y", "times_bought": 0, "last_bought_days": np.nan, "embedding": 0.2}])
    needs_more = explain.reasons(recs, evidence, popular_days=7, min_co_buyers=11)
    assert needs_more.tolist() == ["Similar to Teapot, which you bought"]  # ten shared shoppers, not eleven
    # Everyone bought x, and most of them y: sharing buyers says nothing about u's x (lift 1, not above).
    crowd = [(f"s{i}", item) for i in range(10) for item in ("x", "y")] + [("u", "x")]
    chance = explain.Evidence(
        purchases=pd.DataFrame(crowd, columns=["user_id", "item_id"]),
        item_ids=evidence.item_ids,
        vectors=evidence.vectors,
        titles=evidence.titles,
    )
    popular = _recs([{"item_id": "y", "times_bought": 0, "last_bought_days": np.nan, "popular": 1.0}])
    assert explain.reasons(popular, chance, popular_days=7, min_co_buyers=2).tolist() == ["Popular this week"]
    assert explain.popular_text(90) == "Popular in the last 90 days"


def test_per_user_lists_carry_both_lists_with_their_reasons() -> None:
    recs = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "v"],
            "item_id": ["b", "a", "c", "a"],
            "rank": [2, 1, 1, 1],
            "score": [0.5, 0.9, 0.4, 0.7],
            "source": ["repeat", "embedding", "popular", "als"],
            "list": ["top", "top", "discover", "top"],
            "reason": ["r-b", "r-a", "r-c", "r-va"],
        }
    )
    lists = publish.per_user_lists(recs, "run-1", pd.Timestamp("2026-10-31"))
    assert lists.columns.tolist() == publish.USER_RECOMMENDATIONS_SCHEMA.names
    u, v = lists.set_index("user_id").loc["u"], lists.set_index("user_id").loc["v"]
    assert (u["item_ids"], u["scores"], u["sources"], u["reasons"]) == (
        ["a", "b"],
        [0.9, 0.5],
        ["embedding", "repeat"],
        ["r-a", "r-b"],
    )
    assert (u["discover_item_ids"], u["discover_scores"], u["discover_reasons"]) == (["c"], [0.4], ["r-c"])
    assert (v["discover_item_ids"], v["discover_scores"], v["discover_reasons"]) == ([], [], [])


# ----- the real tiny workspace ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_copy(scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory):
    """(the scored workspace, its run folder, a feature server on a copy of its build, online store and
    publication), one worker."""
    workspace, run_dir = scored_workspace
    copy = tiny_settings(tmp_path_factory.mktemp("select-served"), serve_workers=1)
    live = workspace.live_dir.resolve()
    shutil.copytree(live, copy.builds_dir / live.name)
    swap_link(copy.live_dir, copy.builds_dir / live.name)
    shutil.copytree(workspace.feast_dir, copy.feast_dir, ignore=shutil.ignore_patterns("serve-*.log"))
    shutil.copytree(workspace.published_dir, copy.published_dir)
    with FeatureServer(copy) as server:
        yield copy, run_dir, server


def test_served_recommendations_carry_reasons_and_a_discover_list_of_never_bought_items(served_copy) -> None:
    settings, run_dir, server = served_copy
    recs = pd.read_parquet(settings.published_recommendations)
    assert recs.columns.tolist() == [*lists.COLUMNS, "run_id"]
    assert set(recs["list"]) == {"top", "discover"}
    assert recs["reason"].map(lambda r: bool(REASON.match(r))).all(), recs["reason"].unique()[:10]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    as_of = pd.Timestamp(manifest["stages"]["training_pairs"]["as_of"])
    lines = tables.read(
        settings, "select user_id, item_id, ordered_at from fct_order_lines where user_id is not null"
    )
    before = lines[lines["ordered_at"] < as_of]
    times = before.groupby(["user_id", "item_id"]).size().rename("times").reset_index()
    joined = recs.merge(times, on=["user_id", "item_id"], how="left")
    discover = joined[joined["list"] == "discover"]
    assert len(discover) and discover["times"].isna().all(), "a discover item the user bought before"
    assert (discover.groupby("user_id").size() == settings.discover_n).all()
    bought = joined["reason"].str.startswith("You bought")
    assert joined.loc[bought, "times"].notna().all() and joined.loc[~bought, "times"].isna().all()
    once = joined["reason"].str.startswith("You bought this once")
    assert (joined.loc[once, "times"] == 1).all()
    assert (joined.loc[joined["reason"].str.startswith("You bought this twice"), "times"] == 2).all()
    counted = joined["reason"].str.extract(r"You bought this (\d+) times", expand=False).dropna().astype(int)
    assert (counted == joined.loc[counted.index, "times"]).all()

    users = sorted(recs["user_id"].unique())[:15]
    response = requests.post(
        f"{server.url}/get-online-features",
        json={"feature_service": "recommendations_v1", "entities": {"user_id": users}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    answer = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    for i, user in enumerate(users):
        mine = recs[recs["user_id"] == user].sort_values("rank")
        top, new = mine[mine["list"] == "top"], mine[mine["list"] == "discover"]
        assert answer["item_ids"]["values"][i] == top["item_id"].tolist()
        assert answer["reasons"]["values"][i] == top["reason"].tolist()
        assert answer["discover_item_ids"]["values"][i] == new["item_id"].tolist()
        assert answer["discover_reasons"]["values"][i] == new["reason"].tolist()
        np.testing.assert_allclose(answer["discover_scores"]["values"][i], new["score"], rtol=1e-6)
    for name in ("reasons", "discover_item_ids", "discover_scores", "discover_reasons"):
        assert answer[name]["statuses"] == ["PRESENT"] * len(users), name

    with duckdb.connect(str(settings.published_dir / publish.SERVING_DB), read_only=True) as con:
        table = con.sql("select * from recommendations order by list, user_id, rank").df()
    pd.testing.assert_frame_equal(
        table, recs.sort_values(["list", "user_id", "rank"]).reset_index(drop=True), check_dtype=False
    )


def test_a_user_without_a_discover_list_is_served_empty_lists(
    served_copy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A republication where one user has no never-bought candidate left: PRESENT with empty lists."""
    settings, _, server = served_copy
    for key, value in settings.environ().items():  # publish exports the copy's paths; undo that afterwards
        monkeypatch.setenv(key, value)
    recs = pd.read_parquet(settings.published_recommendations)
    user = recs["user_id"].min()
    kept = recs[~((recs["user_id"] == user) & (recs["list"] == "discover"))].drop(columns="run_id")
    as_of = pd.Timestamp(
        pd.read_parquet(settings.published_dir / "user_recommendations.parquet")["event_timestamp"].max()
    )
    publish.publish(settings, kept, "no-discover", as_of, tmp_path)
    response = requests.post(
        f"{server.url}/get-online-features",
        json={"feature_service": "recommendations_v1", "entities": {"user_id": [user]}},
        timeout=30,
    )
    answer = dict(zip(response.json()["metadata"]["feature_names"], response.json()["results"], strict=True))
    assert answer["run_id"]["values"] == ["no-discover"]
    assert (
        answer["item_ids"]["values"][0]
        == kept[kept["user_id"] == user].sort_values("rank")["item_id"].tolist()
    )
    for name in ("discover_item_ids", "discover_scores", "discover_reasons"):
        assert answer[name] | {"event_timestamps": None} == {
            "values": [[]],
            "statuses": ["PRESENT"],
            "event_timestamps": None,
        }, name
