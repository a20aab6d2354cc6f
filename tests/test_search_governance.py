"""The search log's governance in dbt, on real builds: every injected search defect is quarantined or
repaired exactly, search rows are conserved, the statistics marts are point-in-time safe and reach Feast,
no typed PII passes staging, and a search-only folder (a catalogue and a search log, no events) builds
with `dbt build --select +tag:search` and the settings' thresholds. (A shop folder without a search log
is built by tests/test_governance.py's csv_workspace: the search models then build empty.)
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from scoring.features import feature_store
from scoring.ingest import raw_contract
from scoring.reports.data_quality import build as build_report
from scoring.settings import DBT_DIR, Settings
from scoring.warehouse import dbt, tables
from scoring.warehouse.quality import defect_scorecard
from tests.conftest import tiny_settings

SEARCH_CLASSES = {
    "empty_query",
    "oversized_query",
    "bot_traffic",
    "unknown_item",
    "pii_in_query",
    "markup_in_query",
    "(query normal form)",
}
SEARCH_MARTS = ("fct_searches", "fct_query_stats", "fct_item_search_stats", "fct_query_item_stats")


def _pattern(name: str) -> str:
    """A PII pattern macro of text_rules.sql: the one definition dbt's no_pii test uses."""
    text = (DBT_DIR / "macros" / "text_rules.sql").read_text()
    match = re.search(r"\{%\s*macro " + name + r"\(\)\s*-%\}(.*?)\{%-\s*endmacro\s*%\}", text, re.S)
    assert match, name
    return match.group(1).strip()


PII = re.compile(f"(?:{_pattern('email_pattern')})|(?:{_pattern('phone_pattern')})")


# --- the demo shop's search log ----------------------------------------------------------------------------
def test_every_search_defect_class_is_caught_exactly(workspace: Settings) -> None:
    card = defect_scorecard(workspace)
    searches = card[card.table == "searches"]
    print("\n" + searches.to_string(index=False))
    assert set(searches.defect_class) >= SEARCH_CLASSES
    assert (searches.injected > 0).all(), "a search defect class had nothing to test"
    misses = searches[(searches.recall < 1.0) | (searches.precision < 1.0)]
    assert misses.empty, f"search rules missed or over-flagged:\n{misses.to_string(index=False)}"


def test_the_data_quality_report_shows_the_search_scorecard(workspace: Settings, tmp_path: Path) -> None:
    page = build_report(workspace, tmp_path / "data_quality.html").read_text()
    section = page.split("known defects", 1)[1]
    for defect in SEARCH_CLASSES - {"(query normal form)"}:
        assert f"<td>{defect}</td>" in section, defect
    assert "<td>searches</td>" in page.split("Reconciliation", 1)[1], "the reconciliation lists the log"


def test_search_rows_are_conserved(workspace: Settings) -> None:
    raw = pd.read_parquet(workspace.resolved_raw_path / "searches.parquet")
    row = tables.read(workspace, "select * from fct_row_conservation where relation = 'searches'").iloc[0]
    assert row.raw_rows == len(raw) > 0
    assert row.is_balanced and row.raw_rows == row.clean_rows + row.quarantined_rows
    counts = tables.read(
        workspace,
        "select (select count(*) from fct_searches) as clean,"
        " (select count(*) from fct_quarantine where relation = 'searches') as quarantined,"
        " (select count(distinct source_row_number) from fct_quarantine"
        " where relation = 'searches') as lines",
    ).iloc[0]
    assert counts.clean == row.clean_rows and counts.quarantined == counts.lines == row.quarantined_rows


def test_no_typed_pii_passes_staging(workspace: Settings) -> None:
    """The raw log has e-mail addresses and phone numbers in queries; no search relation after staging,
    no quarantined raw value and no search mart file holds one."""
    raw = pd.read_parquet(workspace.resolved_raw_path / "searches.parquet")
    typed = raw["query"].dropna()
    assert typed.map(lambda q: bool(PII.search(q))).sum() > 0, "the positive control: PII was typed"
    relations = [
        "staging.stg_shop__searches",
        "intermediate.int_searches_checked",
        "fct_quarantine",
        *SEARCH_MARTS,
    ]
    with tables.connect(workspace) as con:
        for relation in relations:
            text = con.sql(f"select * from {relation}").df().astype(str).to_numpy().ravel()
            leaks = [value for value in text if PII.search(value)]
            assert not leaks, f"{relation} holds PII: {leaks[:3]}"
    for mart in SEARCH_MARTS:
        frame = pd.read_parquet(tables.mart_path(workspace, mart))
        assert not frame.astype(str).map(lambda v: bool(PII.search(v))).any().any(), mart
    redacted = tables.read(workspace, "select count(*) as n from fct_searches where query like '%[email]%'")
    assert redacted.n[0] > 0, "queries with an e-mail address are kept, redacted"


def test_statistics_marts_count_only_the_past(workspace: Settings) -> None:
    """Each snapshot, recomputed independently from the clean log: it counts exactly the searches strictly
    before its timestamp; and the latest snapshot of each query holds the all-time figures."""
    checks = {
        "query_stats": """
            select count(*) from fct_query_stats as q
            where q.searches <> (select count(distinct s.search_id) from fct_searches as s
                                 where s.query = q.query and s.searched_at < q.event_timestamp)
               or q.clicks <> (select count(*) from fct_searches as s where s.query = q.query
                               and s.action = 'click' and s.searched_at < q.event_timestamp)""",
        "item_search_stats": """
            select count(*) from fct_item_search_stats as i
            where i.search_purchases <> (select count(*) from fct_searches as s where s.item_id = i.item_id
                                         and s.action = 'purchase' and s.searched_at < i.event_timestamp)
               or i.distinct_queries <> (select count(distinct s.query) from fct_searches as s
                                         where s.item_id = i.item_id
                                         and s.searched_at < i.event_timestamp)""",
        "query_item_stats": """
            select count(*) from fct_query_item_stats as p
            where p.clicks <> (select count(*) from fct_searches as s where s.query = p.query
                               and s.item_id = p.item_id and s.action = 'click'
                               and s.searched_at < p.event_timestamp)
               or abs(coalesce(p.click_share, -1) - coalesce(p.clicks / nullif(
                      (select count(*) from fct_searches as s where s.query = p.query and s.action = 'click'
                       and s.searched_at < p.event_timestamp), 0), -1)) > 1e-12""",
        "latest snapshots": """
            select count(*) from (
                select query, max(searches) as searches from fct_query_stats group by query
            ) as latest
            full join (select query, count(distinct search_id) as searches from fct_searches group by query)
                as everything using (query)
            where latest.searches is distinct from everything.searches""",
    }
    with tables.connect(workspace) as con:
        for name, sql in checks.items():
            assert con.sql(sql).fetchall()[0][0] == 0, name
        sizes = {mart: con.sql(f"select count(*) from {mart}").fetchall()[0][0] for mart in SEARCH_MARTS}
    assert all(sizes.values()), sizes


def test_search_features_reach_feast_point_in_time(workspace: Settings) -> None:
    """search_ranking_v1 joins the snapshot in force at each time, and the online store holds the latest."""
    pairs = tables.read(
        workspace,
        "select p.query, p.item_id, p.event_timestamp, p.clicks, p.click_share, q.searches"
        " from fct_query_item_stats as p inner join fct_query_stats as q"
        " on p.query = q.query and p.event_timestamp = q.event_timestamp"
        " order by q.searches desc, p.clicks desc, p.item_id limit 5",
    )
    user = tables.read(workspace, "select user_id from fct_user_stats limit 1").user_id[0]
    entity_df = pairs[["query", "item_id"]].assign(
        user_id=user, event_timestamp=pairs.event_timestamp + timedelta(hours=1)
    )
    fs = feature_store.store(workspace)
    # The service's views share feature names (clicks, carts, purchases), so it is read with full names.
    joined = fs.get_historical_features(
        entity_df=entity_df, features=fs.get_feature_service("search_ranking_v1"), full_feature_names=True
    ).to_df()
    order = ["query", "item_id", "event_timestamp"]
    joined = joined.sort_values(order).reset_index(drop=True)
    expected = pairs.sort_values(order).reset_index(drop=True)
    assert list(joined["query_stats__searches"]) == list(expected["searches"])
    assert list(joined["query_item_stats__clicks"]) == list(expected["clicks"])
    assert list(joined["query_item_stats__click_share"]) == pytest.approx(list(expected["click_share"]))
    assert {"item_search_stats__search_clicks", "user_stats__orders_count", "item_stats__units_30d"} <= set(
        joined.columns
    )

    latest = tables.read(
        workspace,
        "select query, searches, click_through_rate from fct_query_stats"
        " qualify row_number() over (partition by query order by event_timestamp desc) = 1"
        " order by searches desc limit 3",
    )
    online = fs.get_online_features(
        features=["query_stats:searches", "query_stats:click_through_rate"],
        entity_rows=[{"query": q} for q in latest["query"]],
    ).to_dict()
    assert online["searches"] == list(latest["searches"])
    assert online["click_through_rate"] == pytest.approx(list(latest["click_through_rate"]))


# --- a search-only folder: catalogue + search log, no events ------------------------------------------------
ITEMS = pd.DataFrame({"item_id": ["I1", "I2"], "title": ["Red Ceramic Mug", "Blue Glass Vase"]})
SEARCH_COLUMNS = ["search_id", "user_id", "query", "searched_at", "item_id", "action", "position"]
SEARCH_ROWS = [
    ("S1", "U1", "  Red   MUG ", "2026-01-05 10:00:00", "I1", "click", "1"),
    ("S1", "U1", "  Red   MUG ", "2026-01-05 10:00:00", "I1", "purchase", "1"),
    ("S2", "U1", "<b>Vase</b>", "2026-01-06 10:00:00", None, "none", None),
    ("S3", None, "mail jo@example.com", "2026-01-06 11:00:00", "I2", "click", "2"),
    ("S4", "U2", "mug", "2026-01-07 10:00:00", "I9", "click", "3"),
    *[(f"S{n}", "U3", "vase", f"2026-01-08 1{n - 5}:00:00", None, "none", None) for n in range(5, 9)],
    ("S9", "U2", "   ", "2026-01-08 10:00:00", None, "none", None),
    ("S10", "U2", "a query far longer than the limit", "2026-01-08 11:00:00", None, "none", None),
    ("S1", "U1", "  Red   MUG ", "2026-01-05 10:00:00", "I1", "click", "1"),
]
EXPECTED_RULES = {
    "S4": "unknown_item",
    "S5": "bot_traffic",
    "S6": "bot_traffic",
    "S7": "bot_traffic",
    "S8": "bot_traffic",
    "S9": "empty_query",
    "S10": "oversized_query",
    "S1": "duplicate_row",
}


@pytest.fixture(scope="module")
def search_only(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A folder with items.csv and searches.csv and no events file, built as H3's Home Depot evaluation
    builds it, with thresholds from the settings (a bot above 3 searches a day, queries up to 20 chars)."""
    root = tmp_path_factory.mktemp("search_only")
    folder = root / "raw"
    folder.mkdir()
    ITEMS.to_csv(folder / "items.csv", index=False)
    pd.DataFrame(SEARCH_ROWS, columns=SEARCH_COLUMNS).to_csv(folder / "searches.csv", index=False)
    settings = tiny_settings(
        root / "data",
        source="files",
        raw_path=folder,
        raw_format="csv",
        bot_searches_per_day=3,
        max_query_chars=20,
    )
    dbt.run(settings, "build", "--select", "+tag:search")
    return settings


def test_a_search_only_folder_builds_and_conserves_rows(search_only: Settings) -> None:
    conservation = tables.read(search_only, "select * from fct_row_conservation order by relation")
    assert list(conservation.relation) == ["items", "searches"], "no events file, so no events row"
    assert conservation.is_balanced.all()
    searches = conservation.set_index("relation").loc["searches"]
    assert (searches.raw_rows, searches.clean_rows, searches.quarantined_rows) == (len(SEARCH_ROWS), 4, 8)
    quarantined = tables.read(
        search_only,
        "select json_extract_string(raw_values, '$.search_id') as search_id, rule_codes"
        " from fct_quarantine where relation = 'searches'",
    )
    assert dict(zip(quarantined.search_id, quarantined.rule_codes, strict=True)) == EXPECTED_RULES


def test_a_search_only_folder_normalises_and_redacts(search_only: Settings) -> None:
    clean = tables.read(
        search_only, "select search_id, query, action from fct_searches order by search_id, action"
    )
    assert list(clean.itertuples(index=False, name=None)) == [
        ("S1", "red mug", "click"),
        ("S1", "red mug", "purchase"),
        ("S2", "vase", "none"),
        ("S3", "mail [email]", "click"),
    ]
    stats = tables.read(
        search_only, "select query, searches, clicks, purchases from fct_query_stats order by query"
    )
    assert list(stats.itertuples(index=False, name=None)) == [
        ("mail [email]", 1, 1, 0),
        ("red mug", 1, 1, 1),
        ("vase", 1, 0, 0),
    ]
    raw_values = " ".join(tables.read(search_only, "select raw_values from fct_quarantine").raw_values)
    assert "jo@example.com" not in raw_values


def test_the_full_build_still_requires_events(search_only: Settings) -> None:
    """The search-only selection tolerates a missing events file; `make score`'s raw contract does not."""
    with pytest.raises(raw_contract.RawContractError, match=r"events\.csv: file is missing"):
        raw_contract.check(search_only)


def test_the_settings_drive_the_search_vars(search_only: Settings) -> None:
    compiled = search_only.dbt_target_dir / "compiled" / "aisle" / "models" / "intermediate"
    sql = (compiled / "int_searches_checked.sql").read_text()
    assert "searches.query_chars > 20" in sql and "user_days.searches > 3" in sql
    environ = search_only.model_copy(update={"max_query_chars": 77, "bot_searches_per_day": 9}).environ()
    assert (environ["AISLE_MAX_QUERY_CHARS"], environ["AISLE_BOT_SEARCHES_PER_DAY"]) == ("77", "9")


def test_search_marts_are_parquet_files_feast_can_read(search_only: Settings) -> None:
    for mart in SEARCH_MARTS:
        path = tables.mart_path(search_only, mart)
        assert path.exists(), mart
        assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0][0] > 0, mart
