"""Moving the as-of cut moves every feature with it: nothing at or after the cut reaches the marts that
training, features and candidates read (the evaluation's no-leakage guarantee)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from scoring.training import training_data
from scoring.warehouse import dbt, tables
from tests.conftest import tiny_settings

pytestmark = pytest.mark.integration  # dbt builds, one per cut

CUTS = ("2026-09-15", "2026-10-10")
FEATURE_MARTS = ("fct_user_stats", "fct_item_stats", "fct_user_item_stats", "fct_user_histories")


@pytest.fixture(scope="module")
def cut_workspaces(tmp_path_factory, workspace):
    """The tiny demo shop built twice by dbt, once per cut (raw files shared with `workspace`)."""
    built = {}
    for cut in CUTS:
        settings = tiny_settings(
            tmp_path_factory.mktemp(f"cut-{cut}"), as_of=cut, raw_path=workspace.resolved_raw_path
        )
        dbt.run(settings, "build")
        built[cut] = settings
    return built


def test_no_mart_row_reaches_the_cut(cut_workspaces) -> None:
    for cut, settings in cut_workspaces.items():
        limit = pd.Timestamp(cut)
        assert tables.read(settings, "select max(ordered_at) as t from fct_order_lines")["t"][0] < limit
        for mart in FEATURE_MARTS:
            stamps = pd.read_parquet(tables.mart_path(settings, mart), columns=["event_timestamp"])
            assert stamps["event_timestamp"].max() <= limit, (cut, mart)
        assert training_data.scoring_time(settings) <= limit


def test_rows_after_the_cut_are_held_not_lost(cut_workspaces) -> None:
    held = {}
    for cut, settings in cut_workspaces.items():
        balance = tables.read(settings, "select * from fct_row_conservation where relation = 'events'")
        assert bool(balance["is_balanced"][0])
        held[cut] = int(
            tables.read(
                settings, "select count(*) as n from fct_quarantine where rule_codes like '%after_as_of%'"
            )["n"][0]
        )
    assert held[CUTS[0]] > held[CUTS[1]] > 0


def test_features_change_when_the_cut_moves(cut_workspaces) -> None:
    early, late = (cut_workspaces[c] for c in CUTS)
    stats = {
        cut: tables.read(
            s,
            "select user_id, max(orders_count) as orders, max(monetary_value) as spend "
            "from read_parquet('" + str(tables.mart_path(s, "fct_user_stats")) + "') group by user_id",
        ).set_index("user_id")
        for cut, s in zip(CUTS, (early, late), strict=True)
    }
    both = stats[CUTS[0]].join(stats[CUTS[1]], lsuffix="_early", rsuffix="_late", how="inner")
    assert (both["orders_late"] >= both["orders_early"]).all()
    assert (both["orders_late"] > both["orders_early"]).any()
    # users whose first purchase falls between the cuts exist only in the later build
    assert len(stats[CUTS[1]]) > len(stats[CUTS[0]])


def test_a_later_catalogue_cut_lists_items_before_they_sell(tmp_path, workspace) -> None:
    """A shop without an items file derives its catalogue from its events. With catalogue_as_of after
    as_of, the items first named between the two cuts are listed, with no sales; nothing sold after as_of
    reaches a mart, and items first named after catalogue_as_of stay out."""
    early, late = CUTS
    folder = tmp_path / "events_only"
    folder.mkdir()
    shutil.copy(workspace.resolved_raw_path / "events.parquet", folder / "events.parquet")
    settings = tiny_settings(
        tmp_path / "data", source="files", raw_path=folder, as_of=early, catalogue_as_of=late
    )
    dbt.run(settings, "build")
    raw = pd.read_parquet(folder / "events.parquet", columns=["item_id", "event_at"])
    raw["at"] = pd.to_datetime(raw["event_at"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    seen = raw.dropna(subset=["at"]).groupby("item_id")["at"].agg(["min", "size"])
    new = set(seen.index[(seen["min"] >= early) & (seen["min"] < late) & (seen["size"] >= 3)])
    later = set(seen.index[seen["min"] >= late])
    items = pd.read_parquet(tables.mart_path(settings, "dim_items")).set_index("item_id")
    assert new, "the tiny shop names some items for the first time between the cuts"
    assert new <= set(items.index)
    assert (items.loc[sorted(new), "purchase_lines"] == 0).all()
    assert not later & set(items.index)
    assert tables.read(settings, "select max(ordered_at) as t from fct_order_lines")["t"][0] < pd.Timestamp(
        early
    )
