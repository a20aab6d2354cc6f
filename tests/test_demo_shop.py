"""Tests of the synthetic shop: deterministic bytes, text-only schema, exact defect truth, clean rows that
are really clean, and a personal signal a history-aware recommender can exploit.

The dbt quality rules are tested against this generator's truth, so any drift here (a defect leaking into
clean rows, a truth row without its defect) would make those tests lie.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.ingest.demo_shop import CADENCES, generate
from scoring.ingest.raw_contract import CONTRACT

RATE = 0.02
SMALL = dict(n_users=300, n_items=120, days=120, seed=7, defect_rate=RATE)
FILES = (
    "events.parquet",
    "items.parquet",
    "users.parquet",
    "searches.parquet",
    "_truth/defects.parquet",
    "_truth/clean_titles.parquet",
    "_truth/clean_descriptions.parquet",
    "_truth/clean_queries.parquet",
    "_truth/summary.json",
)
EVENT_TYPES = {"view", "cart", "purchase", "return"}
STAMP = "%Y-%m-%d %H:%M:%S"
EMAIL = re.compile(r"[a-z0-9._]+@example\.(?:com|org|net)")
PHONE = re.compile(r"\+44 7700 900\d{3}")


@pytest.fixture(scope="module", params=sorted(CADENCES))
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small shop per cadence shared by the read-only tests (generation is the slow part): every
    guarantee on defects and clean rows holds whatever the shoppers' rhythm."""
    out = tmp_path_factory.mktemp(f"shop-{request.param}")
    summary = generate(out, **SMALL, cadence=request.param)
    tables = {name: pd.read_parquet(out / f"{name}.parquet") for name in ("events", "items", "users")}
    truth = pd.read_parquet(out / "_truth/defects.parquet")
    return {"dir": out, "summary": summary, "truth": truth, "cadence": request.param, **tables}


def _defective(shop: dict, table: str, defect: str | None = None) -> pd.DataFrame:
    truth = shop["truth"]
    rows = truth[(truth.table == table) & ((truth.defect_class == defect) if defect else True)]
    return shop[table].loc[rows.row_number]


def _clean(shop: dict, table: str) -> pd.DataFrame:
    truth = shop["truth"]
    return shop[table].drop(index=truth[truth.table == table].row_number)


def _expected_count(rate: float, n_rows: int) -> int:
    return 0 if rate <= 0 else max(1, round(rate * n_rows))


def _repair_title(title: str) -> str:
    """The repair the dbt side applies: unescape HTML, collapse whitespace, Title Case each word."""
    return " ".join(w.capitalize() for w in html.unescape(title).split())


# --- determinism -------------------------------------------------------------------------------------------
def test_same_arguments_give_identical_bytes_and_old_files_are_overwritten(tmp_path: Path) -> None:
    args = dict(n_users=150, n_items=60, days=60, seed=3)
    generate(tmp_path / "a", **args)
    generate(tmp_path / "b", **{**args, "seed": 4})
    generate(tmp_path / "b", **args)  # overwrite a different shop in place
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_different_seed_gives_a_different_shop(tmp_path: Path) -> None:
    generate(tmp_path / "a", n_users=150, n_items=60, days=60, seed=3)
    generate(tmp_path / "b", n_users=150, n_items=60, days=60, seed=4)
    for name in ("events.parquet", "items.parquet", "users.parquet", "searches.parquet"):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes(), name


# --- schema and counts --------------------------------------------------------------------------------------
def test_raw_columns_are_all_text(shop: dict) -> None:
    for table, columns in CONTRACT.items():
        schema = pq.read_schema(shop["dir"] / f"{table}.parquet")
        assert schema.names == list(columns)
        assert all(field.type == pa.string() for field in schema), table


def test_truth_schema(shop: dict) -> None:
    schema = pq.read_schema(shop["dir"] / "_truth/defects.parquet")
    assert schema.names == ["table", "row_number", "defect_class", "column", "expected"]
    assert schema.field("row_number").type == pa.int64()
    assert set(shop["truth"].expected) == {"quarantine", "repair"}
    assert not shop["truth"].duplicated(["table", "row_number"]).any(), "a row carries two defects"


def test_row_counts_match_summary(shop: dict) -> None:
    summary = shop["summary"]
    assert json.loads((shop["dir"] / "_truth/summary.json").read_text()) == summary
    # The default cadence is not recorded, so gift shops written before the setting stay current.
    cadence = {} if shop["cadence"] == "gift" else {"cadence": shop["cadence"]}
    assert summary["parameters"] == SMALL | {"end_date": "2026-10-31"} | cadence
    for name, count in summary["row_counts"].items():
        assert pq.read_metadata(shop["dir"] / name).num_rows == count, name
    assert (
        summary["row_counts"]["users.parquet"] == SMALL["n_users"] + summary["defects"]["users"]["duplicate"]
    )
    assert summary["row_counts"]["items.parquet"] == SMALL["n_items"]


# --- defects: counts and presence ---------------------------------------------------------------------------
def test_defect_counts_follow_the_rate_and_match_the_truth(shop: dict) -> None:
    truth, defects = shop["truth"], shop["summary"]["defects"]
    recorded = truth.groupby(["table", "defect_class"]).size()
    for table, classes in defects.items():
        for defect, count in classes.items():
            assert recorded.get((table, defect), 0) == count, (table, defect)
    n_clean_events = len(shop["events"]) - defects["events"]["duplicate"]
    n_purchases = shop["summary"]["clean_events_by_type"]["purchase"]
    per_event = _expected_count(RATE, n_clean_events)
    per_purchase = _expected_count(RATE, n_purchases)
    assert defects["events"] == {
        "missing_user": per_purchase,
        "bad_price": per_purchase,
        "quantity_outlier": per_purchase,
        "future_timestamp": per_event,
        "orphan_item": per_event,
        "malformed_value": per_event,
        "duplicate": per_event,
    }
    per_item = _expected_count(RATE, SMALL["n_items"])
    assert defects["items"] == {"messy_text": per_item, "pii_in_text": per_item}
    assert defects["users"] == {"duplicate": _expected_count(RATE, SMALL["n_users"])}


def test_zero_rate_injects_nothing(tmp_path: Path) -> None:
    summary = generate(tmp_path, n_users=150, n_items=60, days=60, defect_rate=0)
    assert pq.read_metadata(tmp_path / "_truth/defects.parquet").num_rows == 0
    assert all(n == 0 for classes in summary["defects"].values() for n in classes.values())
    assert summary["row_counts"]["users.parquet"] == 150


def test_duplicates_copy_a_clean_row(shop: dict) -> None:
    for table in ("events", "users"):
        clean = _clean(shop, table).fillna("<null>")
        copies = _defective(shop, table, "duplicate").fillna("<null>")
        matched = copies.merge(clean, how="left", indicator=True)
        assert (matched["_merge"] == "both").all(), table
        assert len(matched) == len(copies), "a copy matched two clean rows"


def test_purchase_defects(shop: dict) -> None:
    missing = _defective(shop, "events", "missing_user")
    assert missing.user_id.isna().all() and (missing.event_type == "purchase").all()
    bad_price = _defective(shop, "events", "bad_price")
    assert (bad_price.unit_price.astype(float) <= 0).all() and (bad_price.event_type == "purchase").all()
    outliers = _defective(shop, "events", "quantity_outlier")
    assert (outliers.quantity.astype(int) >= 5000).all() and (outliers.event_type == "purchase").all()


def test_future_and_orphan_defects(shop: dict) -> None:
    future = pd.to_datetime(_defective(shop, "events", "future_timestamp").event_at, format=STAMP)
    assert (future >= pd.Timestamp("2031-01-01")).all()
    orphans = _defective(shop, "events", "orphan_item").item_id
    assert orphans.str.fullmatch(r"I\d{5}").all()
    assert not orphans.isin(shop["items"].item_id).any()


def test_malformed_values_do_not_parse(shop: dict) -> None:
    truth = shop["truth"]
    malformed = truth[truth.defect_class == "malformed_value"]
    assert set(malformed.column) == {"quantity", "event_at", "event_type"}
    for column, rows in malformed.groupby("column").row_number:
        values = shop["events"].loc[rows, column]
        if column == "quantity":
            assert not values.str.fullmatch(r"\d+").any()
        elif column == "event_at":
            assert pd.to_datetime(values, format=STAMP, errors="coerce").isna().all()
            assert values.str.fullmatch(r"\d{2}/\d{2}/\d{4} (2[4-9]|3\d|4[0-7]):[0-5]\d:[0-5]\d").all()
        else:
            assert not values.isin(EVENT_TYPES).any()


def test_messy_titles_repair_to_the_clean_title(shop: dict) -> None:
    messy = _defective(shop, "items", "messy_text")
    clean = pd.read_parquet(shop["dir"] / "_truth/clean_titles.parquet").set_index("item_id").clean_title
    assert sorted(messy.item_id) == sorted(clean.index)
    for item_id, title in zip(messy.item_id, messy.title, strict=True):
        assert title != clean[item_id]
        assert _repair_title(title) == clean[item_id]


def test_pii_in_descriptions_is_recoverable(shop: dict) -> None:
    leaky = _defective(shop, "items", "pii_in_text").set_index("item_id").description
    truth = pd.read_parquet(shop["dir"] / "_truth/clean_descriptions.parquet").set_index("item_id")
    assert sorted(leaky.index) == sorted(truth.index)
    for item_id, row in truth.iterrows():
        assert row.pii_value in leaky[item_id]
        assert EMAIL.search(leaky[item_id]) or PHONE.search(leaky[item_id])
        assert re.sub(r" For trade orders (email|call) .*\.$", "", leaky[item_id]) == row.clean_description


# --- clean rows are clean -----------------------------------------------------------------------------------
def test_clean_events_are_well_formed_and_in_period(shop: dict) -> None:
    clean = _clean(shop, "events")
    assert clean.user_id.str.fullmatch(r"U\d{6}").all()
    assert clean.item_id.isin(shop["items"].item_id).all()
    assert clean.event_type.isin(EVENT_TYPES).all()
    at = pd.to_datetime(clean.event_at, format=STAMP, errors="coerce")
    period = shop["summary"]["period"]
    assert at.notna().all()
    assert (at >= pd.Timestamp(period["start"])).all() and (at < pd.Timestamp(period["end_exclusive"])).all()
    is_view = clean.event_type == "view"
    assert clean.quantity.isna().eq(is_view).all()
    assert clean.quantity.dropna().str.fullmatch(r"\d+").all()
    assert clean.quantity.dropna().astype(int).between(1, 4999).all()
    assert clean.unit_price.str.fullmatch(r"\d+\.\d{2}").all()
    assert (clean.unit_price.astype(float) > 0).all()
    assert clean.order_id.isna().eq(clean.event_type.isin(["view", "cart"])).all()
    assert clean.order_id.dropna().str.fullmatch(r"O\d{7}").all()
    assert clean.country.notna().all()


def test_no_exact_duplicates_among_clean_rows(shop: dict) -> None:
    for table in ("events", "users"):
        assert not _clean(shop, table).duplicated().any(), table
        # Defect edits never make two rows equal: the only repeated rows are the injected copies.
        assert shop[table].duplicated().sum() == shop["summary"]["defects"][table]["duplicate"], table
    assert not shop["users"].drop_duplicates().user_id.duplicated().any()


def test_clean_items_and_users_carry_no_text_defects(shop: dict) -> None:
    items = _clean(shop, "items")
    assert all(_repair_title(t) == t for t in items.title)
    assert not items.description.str.contains(EMAIL).any()
    assert not items.description.str.contains(PHONE).any()
    assert (items.price.astype(float) > 0).all()
    users = shop["users"]
    assert users.email.str.fullmatch(EMAIL).all() and users.phone.str.fullmatch(PHONE).all()
    assert not users.drop_duplicates().email.duplicated().any()


def test_orders_and_returns_are_consistent(shop: dict) -> None:
    clean = _clean(shop, "events")
    purchases = clean[clean.event_type == "purchase"]
    assert purchases.groupby("order_id").size().between(1, CADENCES[shop["cadence"]].max_order_lines).all()
    assert purchases.groupby("order_id").user_id.nunique().eq(1).all()
    returns = clean[clean.event_type == "return"]
    assert len(returns) > 0
    ordered = shop["events"][shop["events"].event_type != "return"].order_id
    assert returns.order_id.isin(ordered).all(), "a return without its order (defects never touch order_id)"
    matched = returns.merge(purchases, on=["order_id", "item_id"], suffixes=("", "_bought"))
    assert len(matched) >= 0.6 * len(returns)  # the others' purchase line carries a defect
    assert (matched.user_id == matched.user_id_bought).all()
    assert (matched.quantity == matched.quantity_bought).all()
    assert (matched.event_at > matched.event_at_bought).all()


# --- signal -------------------------------------------------------------------------------------------------
def _hit_rate(recommended: dict[str, set[str]], held_out: pd.Series) -> float:
    return float(np.mean([bool(recommended.get(user, set()) & items) for user, items in held_out.items()]))


def test_history_beats_popularity(tmp_path: Path) -> None:
    """Hold out each repeat buyer's last order: a category-and-history recommender beats the top sellers."""
    generate(tmp_path, n_users=1500, n_items=400, seed=11, defect_rate=0)
    events = pd.read_parquet(tmp_path / "events.parquet")
    items = pd.read_parquet(tmp_path / "items.parquet", columns=["item_id", "category"])
    bought = events[events.event_type == "purchase"].merge(items, on="item_id")
    last = bought.groupby("user_id").order_id.transform("max")
    repeat = bought.groupby("user_id").order_id.transform("nunique") >= 2
    test_mask = repeat & (bought.order_id == last)
    train, test = bought[~test_mask], bought[test_mask]
    held_out = test.groupby("user_id").item_id.agg(set)
    k = 10

    top_sellers = set(train.item_id.value_counts().index[:k])
    popularity = _hit_rate({user: top_sellers for user in held_out.index}, held_out)

    in_category = train.groupby(["category", "item_id"]).size().rename("sales").reset_index()
    in_category["share"] = in_category.sales / in_category.groupby("category").sales.transform("sum")
    taste = train.groupby(["user_id", "category"]).size().rename("weight").reset_index()
    taste["weight"] /= taste.groupby("user_id").weight.transform("sum")
    scored = taste.merge(in_category, on="category")
    own = train.groupby(["user_id", "item_id"]).size().rename("own").reset_index()
    scored = scored.merge(own, on=["user_id", "item_id"], how="left").fillna({"own": 0})
    scored["score"] = scored.weight * scored.share + scored.own
    top = scored.sort_values(["user_id", "score"], ascending=[True, False]).groupby("user_id").head(k)
    personal = _hit_rate(top.groupby("user_id").item_id.agg(set).to_dict(), held_out)

    assert len(held_out) >= 300
    assert personal >= popularity + 0.1, (personal, popularity)
    assert personal >= 1.3 * popularity, (personal, popularity)


# --- cadence ------------------------------------------------------------------------------------------------
def _purchases(out: Path) -> pd.DataFrame:
    """Clean purchase lines with their time, sorted by user, item and time."""
    events = pd.read_parquet(out / "events.parquet")
    truth = pd.read_parquet(out / "_truth/defects.parquet")
    clean = events.drop(index=truth[truth.table == "events"].row_number)
    bought = clean[clean.event_type == "purchase"].assign(
        at=lambda f: pd.to_datetime(f.event_at, format=STAMP)
    )
    return bought.sort_values(["user_id", "item_id", "at"])


def _rhythm(out: Path) -> tuple[float, float]:
    """Median days between a user's purchases of the same item, and the share of lines re-buying an item."""
    bought = _purchases(out)
    gaps = bought.groupby(["user_id", "item_id"]).at.diff().dt.total_seconds() / 86_400
    return float(gaps.median()), float(bought.duplicated(["user_id", "item_id"]).mean())


def test_grocery_shoppers_reorder_staples_every_week_or_two(tmp_path: Path) -> None:
    generate(tmp_path / "gift", **SMALL)
    generate(tmp_path / "grocery", **SMALL, cadence="grocery")
    gift_gap, gift_repeats = _rhythm(tmp_path / "gift")
    grocery_gap, grocery_repeats = _rhythm(tmp_path / "grocery")
    assert 6 <= grocery_gap <= 14, grocery_gap
    assert grocery_gap <= 0.75 * gift_gap, (grocery_gap, gift_gap)
    assert grocery_repeats >= gift_repeats + 0.25, (grocery_repeats, gift_repeats)
    # More frequent visits: more orders per buying shopper.
    orders = {c: _purchases(tmp_path / c).groupby("user_id").order_id.nunique().mean() for c in CADENCES}
    assert orders["grocery"] >= 2 * orders["gift"], orders


def test_grocery_shop_is_deterministic_and_differs_from_gift(tmp_path: Path) -> None:
    args = dict(n_users=150, n_items=60, days=60, seed=3, cadence="grocery")
    generate(tmp_path / "a", **args)
    generate(tmp_path / "b", **{**args, "cadence": "gift"})
    generate(tmp_path / "b", **args)  # overwrite the gift shop in place
    generate(tmp_path / "gift", **{**args, "cadence": "gift"})
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a/events.parquet").read_bytes() != (tmp_path / "gift/events.parquet").read_bytes()


def test_an_unknown_cadence_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cadence"):
        generate(tmp_path, n_users=10, n_items=20, days=10, cadence="weekly")
