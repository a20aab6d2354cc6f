"""The shops `aisle evaluate` measures Aisle on: where each one's purchases come from, its cuts, and the
profile of the settings the pipeline runs it in.

Why more than one: a recommender tuned on one shop's rhythm can look ahead of the field there and fall
behind elsewhere. The same harness (protocol.py: split, peers, metrics) therefore runs on
  online_retail  the real UCI Online Retail file (a gift wholesaler), purchases read in place from the raw
                 file by protocol.protocol_purchases;
  demo-grocery   the demo shop generated with the grocery cadence (shoppers reorder a basket of staples
                 every week or two, scoring/ingest/demo_shop.py), in the evaluation workspace. Its
                 purchases are the raw purchase events that the generator's truth marks clean, titled
                 from the clean catalogue: like Online Retail's, they are read independently of Aisle's
                 own cleaning, so that a cleaning bug cannot flatter Aisle.
Each shop has two cuts, a main one (test to the end of the data) and an earlier one, so that the ranking
of methods can be checked on a second period.
"""

from __future__ import annotations

import pandas as pd

from scoring.evaluation import protocol
from scoring.ingest.prepare import prepare_raw
from scoring.settings import SHARED_ONLINE_RETAIL, Settings

Cut = tuple[str, str | None]  # (train end = the run's as_of, test end excluded or None = end of data)

# The grocery shop's data are fixed, like the Online Retail file: the demo's default last day, whatever
# the environment says, so that its cuts below always fall in its period.
GROCERY_END = pd.Timestamp(Settings.model_fields["demo_end_date"].default)


def _days_before_end(days: int) -> str:
    return (GROCERY_END - pd.Timedelta(days=days)).strftime("%Y-%m-%d")


CUTS: dict[str, list[Cut]] = {
    # Main: train before September 2011, test to the end (9 December). Second: test June to August.
    "online_retail": [("2011-09-01", None), ("2011-06-01", "2011-09-01")],
    # Main: test the last 30 days. Second: test the 30 days before them. About three trips a window.
    "demo-grocery": [(_days_before_end(30), None), (_days_before_end(60), _days_before_end(30))],
}
# The day after Online Retail's last invoice (9 December 2011): the end of its main cut's test window.
ONLINE_RETAIL_END = "2011-12-10"
SHOPS = tuple(CUTS)
TITLES = {"online_retail": "UCI Online Retail", "demo-grocery": "Demo shop, grocery cadence"}


def _check(shop: str) -> None:
    if shop not in CUTS:
        raise ValueError(f"unknown shop {shop!r}: expected one of {', '.join(SHOPS)}")


def evaluation_settings(shop: str, base: Settings, cut: Cut) -> Settings:
    """The settings the pipeline runs `shop` in for one cut: its own workspace under
    data/evaluation/<shop> (shared by its cuts: every run rebuilds the warehouse with its as_of), the data
    before the cut's train end, and the evaluation profile's fine-tuning budget. The label window is as
    long as the test window: the profile's for Online Retail (about three months), the cut's test window
    for the grocery shop (the weekly rhythm fits several times in it). The catalogue lists every item
    sold before the test window's end, with its title (the grocery shop's catalogue file always does;
    Online Retail's, derived from its invoice lines, through catalogue_as_of): an item first sold in the
    test window is there at the cut, unsold, as the protocol's new items are for every method."""
    _check(shop)
    train_end, test_end = cut
    data_dir = base.data_dir / "evaluation" / shop
    update: dict = {
        "as_of": train_end,
        "data_dir": data_dir,
        "finetune_steps": base.evaluation_finetune_steps,
        # An evaluation measures every run: the gate's verdict is recorded in the manifest, not obeyed.
        "force_publish": True,
        # Each cut tunes its own sources and fine-tunes its own encoder: never the knobs or the model of a
        # run of another cut in this workspace (the main cut's model has read the second cut's test window).
        "retune_max_days": 0,
        "finetune_from_promoted": False,
    }
    if shop == "online_retail":
        # A raw_path set for another source names other data: only an Online Retail one is kept.
        own_file = base.raw_path if base.source == "online_retail" else None
        update |= {
            "source": "online_retail",
            "raw_path": own_file or SHARED_ONLINE_RETAIL,
            "label_window_days": base.evaluation_label_window_days,
            "catalogue_as_of": test_end or ONLINE_RETAIL_END,
        }
    else:
        end = pd.Timestamp(test_end) if test_end else GROCERY_END
        update |= {
            "source": "demo",
            "raw_path": data_dir / "raw",
            "demo_cadence": "grocery",
            "demo_end_date": GROCERY_END.strftime("%Y-%m-%d"),
            # The whole shop: the protocol reads its raw events, which held-back days would cut short.
            "demo_pending_days": 0,
            "label_window_days": (end - pd.Timestamp(train_end)).days,
        }
    return base.model_copy(update=update)


def purchases(shop: str, settings: Settings) -> pd.DataFrame:
    """The protocol's purchase lines of `shop`: user_id, item_id, ordered_at (timestamp), title.

    `settings` is the shop's profile (`evaluation_settings`, any cut: the raw data do not depend on it),
    so that the protocol reads the very files the pipeline runs on. The grocery shop is generated there
    first if it is missing or was written with other parameters.
    """
    _check(shop)
    if shop == "online_retail":
        if settings.source != "online_retail":
            raise ValueError("online_retail purchases need its profile: pass evaluation_settings(...)")
        return protocol.protocol_purchases(settings.resolved_raw_path)
    if settings.source != "demo" or settings.demo_cadence != "grocery":
        raise ValueError("demo-grocery purchases need its profile: pass evaluation_settings(...)")
    prepare_raw(settings)
    return clean_demo_purchases(settings)


def clean_demo_purchases(settings: Settings) -> pd.DataFrame:
    """The demo shop's purchase events that carry no defect in the generator's truth, with clean titles."""
    raw = settings.resolved_raw_path
    events = pd.read_parquet(raw / "events.parquet", columns=["user_id", "item_id", "event_type", "event_at"])
    defects = pd.read_parquet(raw / "_truth" / "defects.parquet", columns=["table", "row_number"])
    clean = events.drop(index=defects.loc[defects["table"] == "events", "row_number"])
    bought = clean[clean["event_type"] == "purchase"]
    items = pd.read_parquet(raw / "items.parquet", columns=["item_id", "title"]).set_index("item_id")["title"]
    repaired = pd.read_parquet(raw / "_truth" / "clean_titles.parquet").set_index("item_id")["clean_title"]
    titles = repaired.combine_first(items)
    frame = pd.DataFrame(
        {
            "user_id": bought["user_id"].to_numpy(),
            "item_id": bought["item_id"].to_numpy(),
            "ordered_at": pd.to_datetime(bought["event_at"], format="%Y-%m-%d %H:%M:%S").to_numpy(),
            "title": titles.reindex(bought["item_id"]).to_numpy(),
        }
    )
    return frame.sort_values(["ordered_at", "user_id", "item_id"], kind="stable", ignore_index=True)
