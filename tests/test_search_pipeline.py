"""Search in the scoring run, every component real: the query normal form against dbt's staging, the
search stages (BM25 index, the learned ranker with its personalisation comparison, head queries), the
atomic publication of head results (Parquet, DuckDB, Feast), and the engine answering a head query from
the publication and a tail query live."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from scoring.features import feature_store
from scoring.pipeline import publish
from scoring.pipeline.run_folder import RunFolder
from scoring.search import features as sf
from scoring.search import stages as search
from scoring.search.engine import QueryError, SearchEngine, SearchFilters, SearchUnavailable
from scoring.search.query import checked, normalise
from scoring.settings import DBT_DIR
from scoring.warehouse import tables

REASONS = {"lexical", "semantic", "popular", "bought_before"}

# Inputs where the SQL and a naive Python would part ways: Unicode folding, full-width forms, Unicode
# spaces, HTML entities, markup, SQL injections, PII, a final capital sigma, and ordinary quotes.
HARD_CASES = [
    "  Red   MUG ",
    "Café crème Brûlée",
    "ＲＥＤ　ｍｕｇ",
    "mug\u00a0\u2003vase\u200b\ufeff",
    "&lt;b&gt;vase&lt;/b&gt; &amp; jug",
    "<script>alert(1)</script>Tea  Towel",
    '<span class="hl">mug</span> <br>',
    "mug'; drop table items; --",
    "mug' or '1'='1",
    "light bulb'); delete from searches; --",
    "x -- y /* z",
    "it's a 'mug'",
    "vase' union select email from users --",
    "3' x 6' tile; drop cloth & select pine",
    "call jane.doe12@example.com or +44 7700 900123",
    "order 020 7946 0958 now",
    "ΟΔΟΣ Σ",
    "\t\n",
    "",
]


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _dbt_normalised(settings, texts: list[str], scratch: Path) -> list[str | None]:
    """normalise_query as dbt compiles it (`dbt compile --inline`, its own process and a scratch
    warehouse, as a data engineer would run it), run in DuckDB on `texts`."""
    values = ", ".join(f"({i}, {_sql_literal(t)})" for i, t in enumerate(texts))
    inline = f"select i, {{{{ normalise_query('q') }}}} as n from (values {values}) as t(i, q) order by i"
    dbt = str(Path(sys.executable).with_name("dbt"))
    result = subprocess.run(
        [
            dbt,
            "compile",
            "--quiet",
            "--inline",
            inline,
            "--project-dir",
            str(DBT_DIR),
            "--profiles-dir",
            str(DBT_DIR),
            "--target-path",
            str(scratch / "target"),
            "--log-path",
            str(scratch / "logs"),
        ],
        env={**os.environ, **settings.environ(), "AISLE_WAREHOUSE": str(scratch / "compile.duckdb")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with duckdb.connect() as con:
        return [row[1] for row in con.sql(result.stdout).fetchall()]


# ----- the query normal form ------------------------------------------------------------------------------
def test_query_normalisation_equals_dbt_staging_on_the_demo_log(workspace) -> None:
    settings = workspace
    raw = pd.read_parquet(settings.resolved_raw_path / "searches.parquet", columns=["query"])
    staged = tables.read(settings, "select source_row_number, query from staging.stg_searches")
    staged = staged.sort_values("source_row_number")
    assert len(staged) == len(raw)
    typed = raw["query"].iloc[staged["source_row_number"].to_numpy()]
    ours = [normalise(q) if q is not None else "" for q in typed]
    theirs = staged["query"].fillna("").tolist()
    different = [(t, o, d) for t, o, d in zip(typed, ours, theirs, strict=True) if o != d]
    assert not different, different[:5]
    # The generator's truth agrees too (every row whose query is not quarantined for its text).
    truth = pd.read_parquet(settings.resolved_raw_path / "_truth" / "clean_queries.parquet")
    by_row = dict(zip(staged["source_row_number"], ours, strict=True))
    wrong = [
        (r, q, by_row[r])
        for r, q in zip(truth["row_number"], truth["clean_query"], strict=True)
        if by_row[r] != q
    ]
    assert not wrong, wrong[:5]


def test_query_normalisation_equals_dbt_on_hard_cases(workspace, tmp_path) -> None:
    theirs = _dbt_normalised(workspace, HARD_CASES, tmp_path)
    ours = [normalise(text) or None for text in HARD_CASES]
    assert ours == theirs


def test_checked_queries_say_what_is_wrong() -> None:
    assert checked("  Red MUG ", 512) == "red mug"
    with pytest.raises(QueryError, match="empty"):
        checked("  <b></b> ", 512)
    with pytest.raises(QueryError, match="513 characters; the limit is 512"):
        checked("x" * 513, 512)
    with pytest.raises(QueryError, match="UTF-8"):
        checked("mug \ud800", 512)
    with pytest.raises(QueryError, match="must be a string"):
        checked(42, 512)  # type: ignore[arg-type]


# ----- pure helpers -----------------------------------------------------------------------------------
def test_head_queries_are_the_smallest_prefix_reaching_the_share() -> None:
    at = pd.Timestamp("2026-10-01")
    log = pd.DataFrame(
        {
            "search_id": [f"S{i}" for i in range(10)],
            "query": ["mug"] * 5 + ["vase"] * 3 + ["jug", "lamp"],
            "searched_at": [at - pd.Timedelta(days=1)] * 10,
        }
    )
    head = search.head_queries(log, at, days=30, share=0.8, cap=100)
    assert head["query"].tolist() == ["mug", "vase"]
    assert head["cumulative_share"].iloc[-1] == pytest.approx(0.8)
    assert search.head_queries(log, at, days=30, share=0.81, cap=100)["query"].tolist() == [
        "mug",
        "vase",
        "jug",
    ]
    assert search.head_queries(log, at, days=30, share=1.0, cap=1)["query"].tolist() == ["mug"]
    # Searches outside the window do not count.
    old = log.assign(searched_at=at - pd.Timedelta(days=40))
    assert search.head_queries(old, at, days=30, share=0.8, cap=100).empty


def test_search_evaluation_reads_the_top_of_each_list_against_every_acted_item() -> None:
    from scoring.search.stages import _evaluate

    scored = pd.DataFrame(
        {
            "search_id": ["s1", "s1", "s1", "s2", "s2"],
            "item_id": ["a", "b", "c", "x", "y"],
            "score": [3.0, 2.0, 1.0, 2.0, 1.0],
        }
    )
    # s1: the shopper bought a (gain 3) and clicked b (gain 1), both ranked on top: perfect.
    # s2: the shopper acted on z, which retrieval never found: nothing to credit.
    labels = pd.DataFrame(
        {"search_id": ["s1", "s1", "s2"], "item_id": ["a", "b", "z"], "gain": [3.0, 1.0, 2.0]}
    )
    ndcg, mrr = _evaluate(scored, labels, "score", k=10)
    assert ndcg.tolist() == pytest.approx([1.0, 0.0])
    assert mrr.tolist() == pytest.approx([1.0, 0.0])
    # Reversing s1's order moves the bought item to rank 3: MRR 1/2 (b is relevant at rank 2).
    ndcg, mrr = _evaluate(scored.assign(score=-scored["score"]), labels, "score", k=10)
    assert ndcg[0] < 1.0
    assert mrr[0] == pytest.approx(0.5)


def test_user_features_come_from_recent_purchases() -> None:
    catalogue = sf.Catalogue(
        pd.DataFrame(
            {
                "item_id": ["a", "b", "c", "d"],
                "text": ["Red Mug", "Blue Mug", "Red Vase", "Glass Jar"],
                "title": ["Red Mug", "Blue Mug", "Red Vase", "Glass Jar"],
                "category": ["Kitchen", "Kitchen", "Home", "Kitchen"],
                "colour": ["Red", "Blue", "Red", None],
                "material": ["Ceramic", "Ceramic", "Glass", "Glass"],
                "price": [5.0, 5.0, 9.0, 3.0],
                "popularity": [10.0, 0.0, 3.0, 1.0],
            }
        )
    )
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2", None], "item_id": ["b", "d", "a", "a"]})
    histories = pd.DataFrame({"user_id": ["u1"], "recent_item_ids": [["a", "c", "d"]]})
    out = sf.with_user_features(frame, catalogue, histories)
    # u1 bought a (Kitchen, Red, Ceramic), c (Home, Red, Glass), d (Kitchen, no colour, Glass).
    assert out["user_category_affinity"].tolist()[:2] == pytest.approx([2 / 3, 2 / 3])
    assert out["user_colour_affinity"].tolist()[:2] == pytest.approx([0.0, 0.0])  # b is blue; d has none
    assert out["user_material_affinity"].tolist()[:2] == pytest.approx([1 / 3, 2 / 3])
    assert out["user_bought_item"].tolist()[:2] == [0.0, 1.0]
    # No history (u2) and anonymous: unknown, not zero.
    assert out.iloc[2:][sf.USER_FEATURES].isna().all().all()
    assert sf.popular_items(np.array([10.0, 0.0, 3.0, 1.0, np.nan]), 0.2).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]


# ----- the scoring run -----------------------------------------------------------------------------------
def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_search_stages_ran_and_recorded_the_personalisation_comparison(scored_workspace) -> None:
    settings, run_dir = scored_workspace
    stages = _manifest(run_dir)["stages"]
    assert stages["search_index"]["items"] == len(pd.read_parquet(run_dir / "items.parquet"))
    ranker = stages["search_rank"]
    assert ranker["positives"] > 0 and ranker["shipped"] == "personalised"
    comparison = ranker["personalisation"]
    assert comparison["logged_in_searches"] > 0
    for name in ("personalised", "without_user", "retrieval_only"):
        assert 0.0 <= comparison[name]["ndcg@10"] <= 1.0
        assert 0.0 <= comparison[name]["mrr@10"] <= 1.0
    assert comparison["ndcg@10_gain"] == pytest.approx(
        comparison["personalised"]["ndcg@10"] - comparison["without_user"]["ndcg@10"], abs=1e-3
    )
    shipped = json.loads((run_dir / "search_ranker.json").read_text())
    assert shipped["personalised"] and set(sf.USER_FEATURES) <= set(shipped["features"])
    baseline = json.loads((run_dir / sf.BASELINE_RANKER_DIR / "search_ranker.json").read_text())
    assert not set(sf.USER_FEATURES) & set(baseline["features"])
    head = stages["search_head"]
    assert head["share_of_searches"] >= settings.search_head_share - 1e-9 or head["head_queries"] == (
        settings.search_head_max_queries
    )


def test_training_rows_see_only_what_was_known_at_the_window_start(scored_workspace) -> None:
    """Point in time: the query x item clicks a training row reads count only searches before the label
    window, never the searches the ranker learns from."""
    settings, run_dir = scored_workspace
    start = pd.Timestamp(_manifest(run_dir)["stages"]["search_rank"]["label_start"])
    rows = pd.read_parquet(run_dir / "search_training.parquet")
    log = search.search_log(settings)
    before = log[(log["searched_at"] < start) & (log["action"] != "none")]
    clicks = before.groupby(["query", "item_id"])["search_id"].nunique()
    seen = rows.drop_duplicates(["query", "item_id"]).set_index(["query", "item_id"])["query_item_clicks"]
    assert (seen <= clicks.reindex(seen.index).fillna(0)).all()
    assert rows["searched_at"].min() >= start


def test_head_results_are_published_in_parquet_duckdb_and_feast(scored_workspace) -> None:
    settings, run_dir = scored_workspace
    current = (settings.runs_dir / "current").resolve()
    published = pd.read_parquet(settings.published_dir / "search_results.parquet")
    head = pd.read_parquet(current / "head_queries.parquet")
    assert set(published["query"]) == set(head["query"]) and len(published) > 0
    assert set(published["run_id"]) == {current.name}
    assert all(q == normalise(q) for q in published["query"])
    assert all(
        len(ids) == len(scores) == len(why)
        for ids, scores, why in published[["item_ids", "scores", "reasons"]].itertuples(index=False)
    )
    items = set(pd.read_parquet(current / "items.parquet")["item_id"])
    assert set(published["item_ids"].explode()) <= items
    assert set(",".join(published["reasons"].explode()).split(",")) <= REASONS

    with duckdb.connect(str(settings.published_dir / publish.SERVING_DB), read_only=True) as con:
        table = con.sql("select query, rank, item_id, score, reasons, run_id from search_results").df()
    query = published["query"].iloc[0]
    expected = published.set_index("query").loc[query]
    rows = table[table["query"] == query].sort_values("rank")
    assert rows["item_id"].tolist() == list(expected["item_ids"])
    assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
    assert len(table) == published["item_ids"].map(len).sum()

    fs = feature_store.store(settings)
    online = fs.get_online_features(
        features=fs.get_feature_service("search_results_v1"), entity_rows=[{"query": query}]
    ).to_dict()
    assert online["item_ids"][0] == list(expected["item_ids"])
    assert online["run_id"][0] == current.name
    assert online["reasons"][0] == list(expected["reasons"])


def test_engine_answers_head_queries_from_the_publication_and_tail_queries_live(scored_workspace) -> None:
    settings, _ = scored_workspace
    engine = SearchEngine.load(settings)
    published = pd.read_parquet(settings.published_dir / "search_results.parquet").set_index("query")
    query = published.index[0]
    answer = engine.search(f"  {query.upper()} ", k=5)
    assert answer.source == "precomputed" and not answer.personalised
    assert answer.normalised_query == query and answer.run_id == engine.run_id
    assert [i.item_id for i in answer.items] == list(published.loc[query, "item_ids"][:5])
    # The published list is what the live path answers for the same query.
    live = engine.search(query, k=settings.search_max_k)
    assert live.source == "live"
    assert [i.item_id for i in live.items[:5]] == [i.item_id for i in answer.items]
    assert [i.score for i in live.items[:5]] == pytest.approx([i.score for i in answer.items], abs=1e-5)

    tail = engine.search("Blu ceramik mugg for tea", k=10)
    assert tail.source == "live" and tail.normalised_query not in published.index
    assert 0 < len(tail.items) <= 10
    body = tail.to_json()
    assert set(body) == {"query", "normalised_query", "source", "personalised", "run_id", "items"}
    for item in body["items"]:
        assert set(item) == {"item_id", "score", "title", "category", "price", "reasons"}
        assert item["reasons"] and set(item["reasons"]) <= REASONS
        assert item["title"]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert any("lexical" in i["reasons"] for i in body["items"])
    with pytest.raises(QueryError):
        engine.search("   ")


def test_a_repeated_tail_query_reuses_its_vector_and_answers_the_same(scored_workspace) -> None:
    settings, _ = scored_workspace
    engine = SearchEngine.load(settings)
    run = engine._loaded()
    first = engine.search("Green linen cushion for sofa", k=10)
    assert first.source == "live"
    before = run.query_vector.cache_info()
    again = engine.search("  green LINEN cushion for sofa", k=10)  # the same normalised query
    after = run.query_vector.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    assert [(i.item_id, i.score) for i in again.items] == [(i.item_id, i.score) for i in first.items]
    # A cached vector is the encoder's own, and no caller can change it.
    vector = run.query_vector(first.normalised_query)
    np.testing.assert_array_equal(vector, sf.encode(run.model, [first.normalised_query])[0])
    with pytest.raises(ValueError, match="read-only"):
        vector[0] = 0.0
    off = SearchEngine.load(settings.model_copy(update={"search_query_cache_size": 0}))
    assert not hasattr(off._loaded().query_vector, "cache_info")
    assert [i.item_id for i in off.search("Green linen cushion for sofa", k=10).items] == [
        i.item_id for i in first.items
    ]


def test_a_known_shopper_gets_the_head_list_reranked_with_their_features(scored_workspace) -> None:
    settings, _ = scored_workspace
    engine = SearchEngine.load(settings)
    histories = pd.read_parquet(tables.mart_path(settings, "fct_user_histories"))
    shopper = histories.sort_values("event_timestamp")["user_id"].iloc[-1]
    query = engine.head_queries[0]
    mine = engine.search(query, user_id=shopper, k=10)
    assert mine.source == "precomputed" and mine.personalised
    # Re-ranking the published candidates equals ranking them live for the same shopper.
    live = engine.search(query, user_id=shopper, k=settings.search_max_k)
    assert live.source == "live" and live.personalised
    assert [i.item_id for i in live.items[:10]] == [i.item_id for i in mine.items]
    assert [i.score for i in live.items[:10]] == pytest.approx([i.score for i in mine.items], abs=1e-5)
    bought = set(
        histories[histories["user_id"] == shopper].sort_values("event_timestamp")["recent_item_ids"].iloc[-1]
    )
    for item in mine.items:
        assert ("bought_before" in item.reasons) == (item.item_id in bought)
    # A shopper the store does not know gets the published list, unpersonalised.
    stranger = engine.search(query, user_id="U-nobody", k=10)
    assert not stranger.personalised and stranger.source == "precomputed"


def test_live_features_equal_the_features_the_ranker_learned_from(scored_workspace) -> None:
    """The live path's fast arrays give exactly what ranking_frame (the training path) gives."""
    settings, _ = scored_workspace
    engine = SearchEngine.load(settings)
    histories = pd.read_parquet(tables.mart_path(settings, "fct_user_histories"))
    shopper = histories.sort_values("event_timestamp")["user_id"].iloc[-1]
    for query in [*engine.head_queries[:8], "blu ceramik mugg", "qzxv"]:
        for user in (None, shopper):
            fast, frame = engine.explain(query, user), engine.explain(query, user, via_frame=True)
            assert fast["item_id"].tolist() == frame["item_id"].tolist()
            features = [c for c in fast.columns if c not in ("query", "item_id", "reasons")]
            assert set(sf.PERSONAL_FEATURES) <= set(features)
            pd.testing.assert_frame_equal(fast[features], frame[features], check_dtype=False, atol=1e-9)


def test_filters_are_answered_live_within_the_filter(scored_workspace) -> None:
    settings, _ = scored_workspace
    engine = SearchEngine.load(settings)
    query = engine.head_queries[0]
    items = pd.read_parquet((settings.runs_dir / "current" / "search_items.parquet").resolve())
    category = items["category"].mode().iloc[0]
    answer = engine.search(query, k=10, filters=SearchFilters(categories=[category], max_price=1000.0))
    assert answer.source == "live"
    assert answer.items and all(i.category == category and i.price <= 1000.0 for i in answer.items)


def test_reload_if_changed_follows_a_new_publication(scored_workspace, tmp_path) -> None:
    settings, _ = scored_workspace
    engine = SearchEngine.load(settings)
    assert not engine.reload_if_changed()
    path = settings.published_dir / "search_results.parquet"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert engine.reload_if_changed()
    assert not engine.reload_if_changed()


def test_a_source_without_a_search_log_skips_search_and_publishes_none(scored_workspace, tmp_path) -> None:
    settings, run_dir = scored_workspace
    # A workspace beside the scored one, sharing its registry, with a copy of its online store.
    live = tmp_path / "live"
    live.mkdir()
    for name in ("registry.db", "target"):
        (live / name).symlink_to(settings.live_dir.resolve() / name)
    (live / "marts").mkdir()  # no search marts: a source without a search log
    (tmp_path / "feast").mkdir()
    shutil.copy(settings.online_store_path, tmp_path / "feast" / "online_store.db")
    other = settings.model_copy(update={"data_dir": tmp_path})
    run = RunFolder.open(run_dir)
    for stage in (search.build_search_index, search.train_search_ranker, search.answer_head_queries):
        assert stage(other, run) == {"skipped": search.NO_LOG}
    recs = pd.read_parquet(run_dir / "recommendations.parquet")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    record = publish.publish(other, recs, "run-without-search", pd.Timestamp("2026-10-31"), scratch, None)
    assert record["search_queries"] == 0
    assert pd.read_parquet(tmp_path / "published" / "search_results.parquet").empty
    with duckdb.connect(str(tmp_path / "published" / publish.SERVING_DB), read_only=True) as con:
        assert con.execute("select count(*) from search_results").fetchone()[0] == 0
    fs = feature_store.store(other)
    query = pd.read_parquet(settings.published_dir / "search_results.parquet")["query"].iloc[0]
    online = fs.get_online_features(features=["search_results:item_ids"], entity_rows=[{"query": query}])
    assert online.to_dict()["item_ids"] == [None]
    # The engine says why it cannot answer from such a run.
    run_folder = tmp_path / "runs" / "run-without-search"
    run_folder.mkdir(parents=True)
    manifest = {"run_id": run_folder.name, "stages": {"search_rank": {"skipped": search.NO_LOG}}}
    (run_folder / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "runs" / "current").symlink_to(run_folder)
    with pytest.raises(SearchUnavailable, match="no search log"):
        SearchEngine.load(other)
