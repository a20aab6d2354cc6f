"""Tests of the evaluation's shops: their cuts, the pipeline profile of each, and purchases read from the
raw data independently of Aisle's cleaning (the generator's truth for the grocery demo, the protocol's
rules for Online Retail, here on a small file in its format)."""

from __future__ import annotations

import gzip
import html
from pathlib import Path

import pandas as pd
import pytest

from scoring.evaluation import protocol, shops
from scoring.ingest.prepare import prepare_raw
from scoring.pipeline import stages
from scoring.pipeline.run_folder import RunFolder
from scoring.settings import SHARED_ONLINE_RETAIL, Settings
from tests.conftest import tiny_settings

SMALL_DEMO = dict(demo_users=150, demo_items=60, demo_days=90, demo_defect_rate=0.02)


def _base(tmp_path: Path, **overrides) -> Settings:
    return Settings(**{"data_dir": tmp_path, "source": "demo", "raw_path": None, **overrides})


# --- cuts ---------------------------------------------------------------------------------------------------
def test_every_shop_has_a_main_cut_and_an_earlier_one_just_before_it() -> None:
    for shop, cuts in shops.CUTS.items():
        (main_end, main_test_end), (second_end, second_test_end) = cuts
        assert main_test_end is None, shop  # the main cut tests to the end of the data
        assert pd.Timestamp(second_end) < pd.Timestamp(second_test_end) == pd.Timestamp(main_end), shop
    assert shops.CUTS["online_retail"] == [("2011-09-01", None), ("2011-06-01", "2011-09-01")]
    assert set(shops.TITLES) == set(shops.SHOPS)


def test_grocery_cuts_test_the_last_thirty_and_the_thirty_before_them() -> None:
    end = pd.Timestamp(Settings.model_fields["demo_end_date"].default)
    (main, _), (second, second_test_end) = shops.CUTS["demo-grocery"]
    assert (end - pd.Timestamp(main)).days == 30
    assert (end - pd.Timestamp(second)).days == 60
    # Both leave most of the default demo period (demo_days) for training.
    assert (pd.Timestamp(second) - (end - pd.Timedelta(days=Settings().demo_days))).days >= 90


# --- profiles -----------------------------------------------------------------------------------------------
def test_online_retail_profile(tmp_path: Path) -> None:
    base = _base(tmp_path)
    for cut in shops.CUTS["online_retail"]:
        profile = shops.evaluation_settings("online_retail", base, cut)
        assert profile.source == "online_retail"
        assert profile.resolved_raw_path == SHARED_ONLINE_RETAIL
        assert profile.as_of == cut[0]
        assert profile.data_dir == tmp_path / "evaluation" / "online_retail"
        assert profile.finetune_steps == base.evaluation_finetune_steps
        assert profile.label_window_days == base.evaluation_label_window_days
        # The cuts share a workspace: a cut's encoder never starts from, nor is judged against, the model of
        # a run of another cut (the main cut's model has read the second cut's test window).
        assert profile.finetune_from_promoted is False
        # The catalogue at the cut lists the items first sold in the test window (the new-items protocol).
        assert profile.catalogue_as_of == (cut[1] or shops.ONLINE_RETAIL_END)
    promoted = RunFolder.create(profile.runs_dir, {})
    (promoted.root / "model").mkdir()
    (promoted.root / "model" / "modules.json").write_text("[]")
    promoted.promote(profile.runs_dir)
    tonight = RunFolder(root=profile.runs_dir / "tonight", run_id="tonight")
    nightly = profile.model_copy(update={"finetune_from_promoted": True})
    assert stages._promoted_model(nightly, tonight) == promoted.root / "model"
    assert stages._promoted_model(profile, tonight) is None
    # An Online Retail file named in the base settings is used; a path meant for another source is not.
    own = tmp_path / "retail.csv.gz"
    retail_base = Settings(data_dir=tmp_path, source="online_retail", raw_path=own)
    assert shops.evaluation_settings("online_retail", retail_base, ("2011-09-01", None)).raw_path == own
    demo_base = _base(tmp_path, raw_path=tmp_path / "my-demo")
    assert shops.evaluation_settings("online_retail", demo_base, ("2011-09-01", None)).raw_path == (
        SHARED_ONLINE_RETAIL
    )


def test_grocery_profile(tmp_path: Path) -> None:
    base = _base(tmp_path, demo_end_date="2030-01-01", finetune_steps=3)
    for cut in shops.CUTS["demo-grocery"]:
        profile = shops.evaluation_settings("demo-grocery", base, cut)
        workspace = tmp_path / "evaluation" / "demo-grocery"
        assert (profile.source, profile.demo_cadence, profile.as_of) == ("demo", "grocery", cut[0])
        assert profile.data_dir == workspace
        assert profile.resolved_raw_path == (workspace / "raw").resolve()
        # The shop's data are fixed, whatever the environment says, so the cuts fall in its period.
        assert profile.demo_end_date == Settings.model_fields["demo_end_date"].default
        assert profile.finetune_steps == base.evaluation_finetune_steps
        assert profile.label_window_days == 30  # as long as each cut's test window
    assert base.demo_cadence == "gift"  # the base settings are not touched


def test_an_unknown_shop_or_the_wrong_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown shop"):
        shops.evaluation_settings("corner-shop", _base(tmp_path), ("2026-10-01", None))
    with pytest.raises(ValueError, match="unknown shop"):
        shops.purchases("corner-shop", _base(tmp_path))
    with pytest.raises(ValueError, match="evaluation_settings"):
        shops.purchases("demo-grocery", _base(tmp_path))  # a gift shop is not the grocery shop
    with pytest.raises(ValueError, match="evaluation_settings"):
        shops.purchases("online_retail", _base(tmp_path))


# --- purchases ----------------------------------------------------------------------------------------------
RETAIL_ROWS = [  # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID
    (
        "900101",
        "97001A",
        " BLUE ENAMEL PICNIC MUG",
        "6",
        "2011-03-14 08:15:00",
        "2.55",
        "99001.0",
    ),
    ("900107", "97011", "WOOLLEN SCARF TARTAN", "6", "2011-03-14 08:17:00", "1.85", "99001.0"),
    ("C900108", "97011", "WOOLLEN SCARF TARTAN", "-1", "2011-03-14 09:30:00", "1.85", "99001.0"),
    ("900109", "POST", "POSTAGE", "1", "2011-03-14 09:34:00", "18.00", "99005.0"),
    ("900110", "97012", "PEWTER EGG CUP", "2", "2011-03-14 09:39:00", "0", "99005.0"),
    ("900111", "97012", "PEWTER EGG CUP", "2", "2011-03-14 09:40:00", "4.95", ""),
    ("900112", "97012", "PEWTER EGG CUP", "0", "2011-03-14 09:41:00", "4.95", "99005.0"),
    (
        "900113",
        "97014g",
        "FELT FOX DOORSTOP",
        "1",
        "2011-03-15 10:00:00",
        "3.39",
        "99005.0",
    ),
]


def test_online_retail_purchases_follow_the_protocol_rules(tmp_path: Path) -> None:
    path = tmp_path / "retail.csv.gz"
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    with gzip.open(path, "wt") as f:
        f.write(header + "".join(",".join([*row, "United Kingdom"]) + "\n" for row in RETAIL_ROWS))
    profile = shops.evaluation_settings(
        "online_retail",
        Settings(data_dir=tmp_path, source="online_retail", raw_path=path),
        ("2011-03-15", None),
    )
    bought = shops.purchases("online_retail", profile)
    assert list(bought.columns) == ["user_id", "item_id", "ordered_at", "title"]
    # Kept: positive quantity and price, a customer, not a cancellation, a product code.
    assert sorted(zip(bought.user_id, bought.item_id, strict=True)) == [
        ("99001", "97001A"),
        ("99001", "97011"),
        ("99005", "97014G"),
    ]
    assert pd.api.types.is_datetime64_any_dtype(bought.ordered_at)
    assert "BLUE ENAMEL PICNIC MUG" in set(bought.title)


@pytest.fixture(scope="module")
def grocery(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small grocery demo shop in its evaluation workspace (the main cut's profile), and its purchases."""
    base = Settings(data_dir=tmp_path_factory.mktemp("shops"), source="demo", raw_path=None, **SMALL_DEMO)
    profile = shops.evaluation_settings("demo-grocery", base, shops.CUTS["demo-grocery"][0])
    return {"base": base, "profile": profile, "purchases": shops.purchases("demo-grocery", profile)}


def test_grocery_purchases_are_the_clean_purchase_events(grocery: dict) -> None:
    profile, bought = grocery["profile"], grocery["purchases"]
    raw = profile.resolved_raw_path
    summary = pd.read_json(raw / "_truth" / "summary.json", typ="series")
    assert summary["parameters"]["cadence"] == "grocery"
    assert list(bought.columns) == ["user_id", "item_id", "ordered_at", "title"]
    assert pd.api.types.is_datetime64_any_dtype(bought.ordered_at)
    # No defect reaches the protocol: no missing user, no orphan item, nothing out of the period, no copy.
    items = pd.read_parquet(raw / "items.parquet")
    assert bought.user_id.str.fullmatch(r"U\d{6}").all()
    assert bought.item_id.isin(items.item_id).all()
    start = pd.Timestamp(summary["period"]["start"])
    assert bought.ordered_at.between(start, pd.Timestamp(summary["period"]["end_exclusive"])).all()
    assert not bought.duplicated(["user_id", "item_id", "ordered_at"]).any()
    generated = summary["clean_events_by_type"]["purchase"]
    assert 0.8 * generated <= len(bought) < generated
    # Titles are the clean catalogue's: repaired where the raw title is messy.
    assert all(" ".join(w.capitalize() for w in html.unescape(t).split()) == t for t in bought.title)
    messy = pd.read_parquet(raw / "_truth" / "clean_titles.parquet")
    titled = bought.drop_duplicates("item_id").set_index("item_id").title
    for item_id, clean_title in zip(messy.item_id, messy.clean_title, strict=True):
        assert titled.get(item_id, clean_title) == clean_title


def test_every_cut_and_the_pipeline_read_the_same_grocery_files(grocery: dict) -> None:
    profile, bought = grocery["profile"], grocery["purchases"]
    assert prepare_raw(profile) == {"raw_path": str(profile.resolved_raw_path), "generated": False}
    second = shops.evaluation_settings("demo-grocery", grocery["base"], shops.CUTS["demo-grocery"][1])
    assert second.resolved_raw_path == profile.resolved_raw_path
    pd.testing.assert_frame_equal(shops.purchases("demo-grocery", second), bought)


def test_the_protocol_splits_the_grocery_shop_on_both_cuts(grocery: dict) -> None:
    bought = grocery["purchases"]
    for train_end, test_end in shops.CUTS["demo-grocery"]:
        split = protocol.split(bought, train_end, test_end)
        # Shoppers sign up all through the (here short) period, so not all have bought by either cut.
        assert len(split.users) >= 0.4 * bought.user_id.nunique(), (train_end, len(split.users))
        # A grocery shop's test window is mostly reorders: most users re-buy something they bought before.
        rebought = [bool(truth & past) for truth, past in zip(split.truth, split.past, strict=True)]
        assert sum(rebought) >= 0.8 * len(rebought)


@pytest.mark.integration
def test_aisles_cleaning_of_the_grocery_shop_keeps_exactly_the_protocols_purchases(tmp_path: Path) -> None:
    """The grocery cadence passes the governed build, and dbt's order lines are the truth's clean purchases:
    the protocol and the pipeline see the same shop."""
    import duckdb

    from scoring.pipeline.build import build_features

    settings = tiny_settings(tmp_path, demo_cadence="grocery")
    prepare_raw(settings)
    build_features(settings)  # raises if any dbt model or error-level test fails
    truth = shops.clean_demo_purchases(settings)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        lines = con.sql("select user_id, item_id, ordered_at from main.fct_order_lines").df()
    key = ["user_id", "item_id", "ordered_at"]
    pd.testing.assert_frame_equal(
        lines.sort_values(key, ignore_index=True),
        truth[key].sort_values(key, ignore_index=True),
        check_dtype=False,  # DuckDB's timestamps are in microseconds, pandas' in nanoseconds
    )
