"""The raw contract: what a folder of your own files must hold, and one clear message before dbt runs when
a file cannot be read. Then, for real: an events-only folder (CSV and Parquet) builds and scores, and a
folder with minimal items and no country builds, with the item dimension derived as the README says.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from scoring.ingest import demo_shop, raw_contract
from scoring.pipeline import job
from scoring.settings import Settings
from scoring.warehouse import dbt, tables
from tests.conftest import tiny_settings

EVENTS_HEADER = b"user_id,item_id,event_type,event_at,quantity,unit_price,order_id,country\n"
EVENT = b"U1,I1,purchase,2026-01-01 10:00:00,1,4.95,O1,France\n"
SEARCHES_HEADER = b"search_id,user_id,query,searched_at,item_id,action,position\n"
SEARCH = b"S1,,red mug,2026-01-01 09:59:50,I1,click,2\n"


def _write(folder: Path, drop: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for table, columns in raw_contract.CONTRACT.items():
        frame = pd.DataFrame({c: ["x"] for c in columns if not (table == "events" and c == drop)})
        frame.to_csv(folder / f"{table}.csv", index=False)


def _files(folder: Path, fmt: str = "csv") -> Settings:
    return tiny_settings(folder.parent, source="files", raw_path=folder, raw_format=fmt)


def test_a_complete_folder_passes(tmp_path: Path) -> None:
    _write(tmp_path / "raw")
    found = raw_contract.check(_files(tmp_path / "raw"))
    assert set(found) == {"events", "items", "users", "searches"}


def test_an_events_only_folder_without_optional_columns_passes(tmp_path: Path) -> None:
    """The README's contract: items and users are optional files, country an optional events column."""
    folder = tmp_path / "raw"
    folder.mkdir()
    pd.DataFrame({c: ["x"] for c in raw_contract.REQUIRED["events"]}).to_csv(
        folder / "events.csv", index=False
    )
    assert raw_contract.check(_files(folder)) == {"events": list(raw_contract.REQUIRED["events"])}
    pd.DataFrame({"item_id": ["I1"], "title": ["Mug"]}).to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"user_id": ["U1"]}).to_csv(folder / "users.csv", index=False)
    assert raw_contract.check(_files(folder))["items"] == ["item_id", "title"]


def test_a_missing_column_names_the_file_the_column_and_the_rule(tmp_path: Path) -> None:
    _write(tmp_path / "raw", drop="unit_price")
    with pytest.raises(raw_contract.RawContractError) as error:
        raw_contract.check(_files(tmp_path / "raw"))
    message = str(error.value)
    assert "events.csv" in message and "unit_price" in message and "canonical contract" in message
    assert "line 1" in message and "rule required_columns" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, source="files", raw_path=tmp_path / "nowhere", raw_format="parquet")
    with pytest.raises(raw_contract.RawContractError, match="events.parquet: file is missing"):
        raw_contract.check(settings)


def test_the_online_retail_file_passes(online_retail_path: Path, tmp_path: Path) -> None:
    raw_contract.check(tiny_settings(tmp_path, source="online_retail", raw_path=online_retail_path))


# (case, file name, file bytes, fragments the one message must hold: file, line, rule, what).
BAD_FILES = [
    (
        "header only",
        "events.csv",
        EVENTS_HEADER,
        ["events.csv", "line 1", "rule has_data_rows", "no data rows"],
    ),
    ("empty file", "events.csv", b"", ["events.csv", "line 1", "rule has_header", "empty"]),
    (
        "unbalanced quote",
        "events.csv",
        EVENTS_HEADER + EVENT + b'U2,I1,view,2026-01-01 10:00:00,,4.95,,"France\n' + EVENT + EVENT,
        ["events.csv", "line 3", "rule balanced_quotes", "never closed"],
    ),
    (
        "unbalanced quote closed by a later one",
        "events.csv",
        EVENTS_HEADER
        + EVENT
        + b'U2,I1,view,2026-01-01 10:00:00,,4.95,,"France\nU3,I1,view,"x,,,,,\n'
        + EVENT,
        ["events.csv", "line 3", "rule balanced_quotes", "closes on line 4"],
    ),
    (
        "unbalanced quote leaving too many fields",
        "events.csv",
        EVENTS_HEADER
        + EVENT
        + b'U2,I1,view,2026-01-01 10:00:00,,4.95,,"France\nU3",I1,view,x,,,,,\n'
        + EVENT,
        ["events.csv", "line 3", "rule balanced_quotes", "only closes on line 4", "16 fields"],
    ),
    (
        "ragged row",
        "events.csv",
        EVENTS_HEADER + EVENT + EVENT + b"U1,I1,view,2026-01-01 10:00:00,,4.95\n",
        ["events.csv", "line 4", "rule same_field_count", "has 6 fields", "has 8"],
    ),
    (
        "mixed line endings",
        "events.csv",
        EVENTS_HEADER + EVENT + EVENT.replace(b"\n", b"\r\n") + EVENT,
        ["events.csv", "line 3", "rule one_line_ending", "ends with CRLF", "line 1 ends with LF"],
    ),
    (
        "bare CR line ending",
        "events.csv",
        EVENTS_HEADER + EVENT + EVENT.replace(b"\n", b"\r") + EVENT,
        ["events.csv", "line 3", "rule one_line_ending", "bare CR"],
    ),
    (
        "non-UTF-8 byte",
        "events.csv",
        EVENTS_HEADER + EVENT + b"U1,I1,view,2026-01-01 10:00:00,,4.95,,Cura\xe7ao\n",
        ["events.csv", "line 3", "rule utf8", "0xE7"],
    ),
    (
        "missing required column",
        "events.csv",
        b"user_id,item_id,event_type,event_at,quantity,order_id\nU1,I1,view,2026-01-01 10:00:00,,\n",
        ["events.csv", "line 1", "rule required_columns", "column unit_price is missing"],
    ),
    (
        "duplicate header name",
        "events.csv",
        EVENTS_HEADER.replace(b"country", b"User_Id") + EVENT,
        ["events.csv", "line 1", "rule unique_header", "appears twice", "fields 1 and 8"],
    ),
    (
        "malformed quoting",
        "events.csv",
        EVENTS_HEADER + b'U1,"I1"x,view,2026-01-01 10:00:00,,4.95,,France\n',
        ["events.csv", "line 2", "rule balanced_quotes"],
    ),
    (
        "header-only optional items",
        "items.csv",
        b"item_id,title\n",
        ["items.csv", "line 1", "rule has_data_rows", "leave an optional file out"],
    ),
    (
        "ragged optional users",
        "users.csv",
        b"user_id,country\nU1,France\nU2,France,extra\n",
        ["users.csv", "line 3", "rule same_field_count"],
    ),
    # A Parquet file has no lines: the message names the file and the rule.
    ("unreadable Parquet", "events.parquet", b"PAR1 not really", ["events.parquet", "rule readable_parquet"]),
    # The optional search log gets the same checks.
    (
        "searches without a query column",
        "searches.csv",
        b"search_id,user_id,searched_at,item_id,action\nS1,U1,2026-01-01 10:00:00,,none\n",
        ["searches.csv", "line 1", "rule required_columns", "column query is missing", "optional position"],
    ),
    (
        "ragged searches",
        "searches.csv",
        SEARCHES_HEADER + SEARCH + b"S2,U1,red mug,2026-01-01 10:00:00,I1,click\n",
        ["searches.csv", "line 3", "rule same_field_count", "has 6 fields", "has 7"],
    ),
    (
        "unbalanced quote in a query",
        "searches.csv",
        SEARCHES_HEADER + SEARCH + b'S2,U1,"red mug,2026-01-01 10:00:00,I1,click,1\n' + SEARCH,
        ["searches.csv", "line 3", "rule balanced_quotes"],
    ),
    (
        "non-UTF-8 query",
        "searches.csv",
        SEARCHES_HEADER + SEARCH + b"S2,U1,caf\xe9 mug,2026-01-01 10:00:00,,none,\n",
        ["searches.csv", "line 3", "rule utf8", "0xE9"],
    ),
]


@pytest.mark.parametrize(
    ("case", "name", "content", "fragments"), BAD_FILES, ids=[case for case, *_ in BAD_FILES]
)
def test_a_bad_file_gets_one_clear_message(
    tmp_path: Path, case: str, name: str, content: bytes, fragments: list[str]
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    fmt = name.rsplit(".", 1)[1]
    if name.startswith("events"):
        (folder / name).write_bytes(content)
    else:
        (folder / "events.csv").write_bytes(EVENTS_HEADER + EVENT)
        (folder / name).write_bytes(content)
    with pytest.raises(raw_contract.RawContractError) as error:
        raw_contract.check(_files(folder, fmt))
    message = str(error.value)
    print(f"\n{case}: {message}")
    missing = [fragment for fragment in fragments if fragment not in message]
    assert not missing, f"{case}: {missing} not in {message!r}"
    assert message.count("(rule ") == 1, "one message, one rule"


def test_the_search_log_is_optional_and_checked_like_the_others(tmp_path: Path) -> None:
    """No searches file passes; a header-only one is harmless; position is optional; a Parquet search log
    without its action column is named with the file and the rule."""
    folder = tmp_path / "raw"
    folder.mkdir()
    events = pd.DataFrame({c: ["x"] for c in raw_contract.REQUIRED["events"]})
    events.to_parquet(folder / "events.parquet")
    settings = _files(folder, "parquet")
    assert "searches" not in raw_contract.check(settings)
    searches = pd.DataFrame({c: pd.Series([], dtype="string") for c in raw_contract.REQUIRED["searches"]})
    searches.to_parquet(folder / "searches.parquet")
    assert raw_contract.check(settings)["searches"] == list(raw_contract.REQUIRED["searches"])
    searches.drop(columns="action").to_parquet(folder / "searches.parquet")
    with pytest.raises(raw_contract.RawContractError) as error:
        raw_contract.check(settings)
    message = str(error.value)
    assert "searches.parquet" in message and "column action is missing" in message
    assert "rule required_columns" in message and "table searches" in message


def test_the_check_streams_a_large_file_quickly(tmp_path: Path) -> None:
    """One pass over a 100,000-line file (the real Online Retail file has 541,910 lines)."""
    folder = tmp_path / "raw"
    folder.mkdir()
    with (folder / "events.csv").open("wb") as f:
        f.write(EVENTS_HEADER)
        for n in range(99_999):
            f.write(b"U%d,I%d,purchase,2026-01-01 10:00:00,1,4.95,O%d,France\n" % (n % 500, n % 90, n))
    started = time.perf_counter()
    raw_contract.check(_files(folder))
    seconds = time.perf_counter() - started
    print(f"\nraw contract check of a 100,000-line CSV file: {seconds:.2f} s")
    assert seconds < 10


# --- the contract, built for real ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The tiny demo shop's raw tables, to cut down into the folders below."""
    out = tmp_path_factory.mktemp("demo_raw")
    demo_shop.generate(out, n_users=150, n_items=60, days=90, seed=42, defect_rate=0.02)
    return {t: pd.read_parquet(out / f"{t}.parquet") for t in ("events", "items", "users")}


def _normalised(title: str) -> str:
    """What dbt's normalise_title makes of a title: entities decoded, whitespace collapsed, Title Case."""
    for entity, char in (
        ("&quot;", '"'),
        ("&#39;", "'"),
        ("&apos;", "'"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&amp;", "&"),
    ):
        title = title.replace(entity, char)
    return " ".join(word[:1].upper() + word[1:] for word in title.lower().split())


def _events_with_titles(demo: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, str, str]:
    """Events with the optional `title` column and without `country`: each event carries its item's
    catalogue title, except that one item's titles vary in whitespace and case (and one differs), and one
    item's events carry none. Returns the events and those two item ids."""
    events = demo["events"].drop(columns=["country"])
    titles = demo["items"].drop_duplicates("item_id").set_index("item_id").title
    events["title"] = events.item_id.map(titles)
    busy = events.item_id.value_counts()
    clean = [i for i in busy.index if i in titles.index and titles[i] == _normalised(titles[i])]
    messy_item, untitled_item = clean[0], clean[1]
    rows = events.index[events.item_id == messy_item]
    title = titles[messy_item]
    variants = ["  " + title.upper() + " ", title.lower(), "Another Name For It"]
    for k, row in enumerate(rows):
        events.loc[row, "title"] = variants[k] if k < 3 else variants[k % 2]
    events.loc[events.item_id == untitled_item, "title"] = None
    return events, messy_item, untitled_item


def _assert_scored(settings: Settings, run_dir: Path) -> None:
    recs = pd.read_parquet(settings.published_recommendations)
    assert len(recs) > 0 and recs.user_id.nunique() > 10
    assert (run_dir / "manifest.json").exists()
    conservation = tables.read(settings, "select * from fct_row_conservation")
    assert list(conservation.relation) == ["events"], "only the events file was supplied"
    assert conservation.is_balanced.all()


@pytest.mark.e2e
def test_an_events_only_csv_folder_builds_and_scores(demo: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    events, messy_item, untitled_item = _events_with_titles(demo)
    events.to_csv(folder / "events.csv", index=False)
    settings = _files(folder)
    run_dir = job.run(settings)
    _assert_scored(settings, run_dir)

    items = tables.read(settings, "select * from dim_items").set_index("item_id")
    clean = tables.read(
        settings, "select distinct item_id from intermediate.int_events_clean where event_type <> 'return'"
    )
    assert set(items.index) == set(clean.item_id), "one item per item of the clean events"
    catalogue = demo["items"].drop_duplicates("item_id").set_index("item_id").title
    # The most frequent normalised title wins over case and whitespace variants and a rarer other name.
    assert items.loc[messy_item, "title"] == catalogue[messy_item]
    assert items.loc[messy_item, "product_type"] is not None
    # An item whose events carry no title is named by its id, and nothing is parsed from the id.
    assert items.loc[untitled_item, "title"] == untitled_item
    assert pd.isna(items.loc[untitled_item, "product_type"])
    named = items.drop(index=[messy_item, untitled_item]).join(catalogue.rename("raw_title"), how="inner")
    assert len(named) > 40
    assert (named.title == named.raw_title.map(_normalised)).all()
    # Without a catalogue no event is an orphan, and every user of a clean event is a user.
    rules = tables.read(settings, "select distinct rule_code from fct_quarantine_rules")
    assert "orphan_item_id" not in set(rules.rule_code)
    users = tables.read(settings, "select * from dim_users")
    seen = tables.read(
        settings, "select distinct user_id from intermediate.int_events_clean where user_id is not null"
    )
    assert set(users.user_id) == set(seen.user_id)
    assert users.signed_up_at.notna().all() and users.country.isna().all()


@pytest.mark.e2e
def test_an_events_only_parquet_folder_without_titles_builds_and_scores(
    demo: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    demo["events"].to_parquet(folder / "events.parquet", index=False)
    settings = _files(folder, "parquet")
    run_dir = job.run(settings)
    _assert_scored(settings, run_dir)
    items = tables.read(settings, "select item_id, title, product_type from dim_items")
    assert len(items) > 40
    assert (items.title == items.item_id).all(), "no title anywhere: every item is named by its id"
    assert items.product_type.isna().all()


@pytest.mark.integration
def test_minimal_items_and_no_country_build(demo: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    demo["events"].drop(columns=["country"]).to_csv(folder / "events.csv", index=False)
    demo["items"][["item_id", "title"]].to_csv(folder / "items.csv", index=False)
    demo["users"][["user_id"]].to_csv(folder / "users.csv", index=False)
    settings = _files(folder)
    raw_contract.check(settings)
    dbt.run(settings, "build")

    conservation = tables.read(settings, "select * from fct_row_conservation order by relation")
    assert list(conservation.relation) == ["events", "items", "users"]
    assert conservation.is_balanced.all()
    assert dict(zip(conservation.relation, conservation.raw_rows, strict=True)) == {
        t: len(demo[t]) for t in ("events", "items", "users")
    }
    items = tables.read(settings, "select * from dim_items")
    assert items.description.isna().all() and items.brand.isna().all()
    # No catalogue category: the category is the product type parsed from the title.
    assert (items.category == items.product_type).all() and items.category.notna().mean() > 0.9
    # No catalogue price: the list price is the median clean unit price.
    sold = items[items.purchase_lines > 0]
    assert (sold.list_price == sold.median_unit_price).all()
    assert tables.read(settings, "select count(*) as n from dim_users where country is not null").n[0] == 0
    # With a catalogue, events for items outside it are still orphans.
    rules = tables.read(settings, "select distinct rule_code from fct_quarantine_rules")
    assert "orphan_item_id" in set(rules.rule_code)
