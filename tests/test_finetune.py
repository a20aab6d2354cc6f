import json

import numpy as np
import pandas as pd
import pytest

from scoring.settings import Settings
from scoring.training import training_data
from scoring.training.finetune import (
    _batch_plan,
    _hold_out,
    _tasks,
    bf16_native,
    encoder_of,
    finetune,
    load_model,
    recall_at_k,
)
from scoring.training.text_vectors import RUN_VECTORS, TextVectors
from tests.conftest import tiny_settings

pytestmark = pytest.mark.integration  # loads the real model, fine-tunes it and saves a checkpoint


@pytest.mark.parametrize(("mode", "precision"), [("full", "auto"), ("full", "off"), ("head", "auto")])
def test_fine_tuning_lowers_the_in_batch_loss_and_saves_a_loadable_checkpoint(
    tmp_path, mode, precision
) -> None:
    # Full fine-tuning under bf16 autocast where this CPU has AMX tiles, and in fp32; the head on the
    # frozen encoder's vectors: all must learn.
    # A small real task: a user who bought colour X items next buys another colour X item.
    colours = ["red", "blue", "green", "yellow", "black", "white", "pink", "grey"]
    things = ["mug", "lamp", "cushion", "vase", "candle", "tray"]
    rows = [
        {"query": f"{c} {a} | {c} {b}", "positive": f"{c} {t}", "item_id": f"{c}-{t}"}
        for c in colours
        for a, b, t in zip(things, things[1:] + things[:1], things[2:] + things[:2], strict=True)
    ]
    pairs = pd.DataFrame(rows)
    settings = tiny_settings(
        tmp_path,
        finetune_mode=mode,
        finetune_steps=12,
        finetune_batch_size=8,
        learning_rate=1e-4,
        finetune_bf16=precision,
        finetune_head_steps=12,
        finetune_head_batch_size=8,
    )
    metrics = finetune(pairs, settings, tmp_path / "model", log_every=1)
    assert metrics["mode"] == mode and metrics["steps"] == 12 and metrics["pairs"] == len(pairs)
    assert metrics["loss_last_quarter_mean"] < metrics["loss_first_quarter_mean"]
    assert metrics["device"] == "cpu"
    assert metrics["bf16"] is (mode == "full" and precision == "auto" and bf16_native("cpu"))
    saved = json.loads((tmp_path / "model" / "finetune_metrics.json").read_text())
    assert saved["loss_first"] == metrics["loss_first"]
    model = load_model(str(tmp_path / "model"), "cpu", 32)
    assert model.encode(["red mug"]).shape == (1, 384)
    # The item vectors the run keeps for the embed stage are the shipped model's own.
    texts = pairs["positive"].unique().tolist()
    kept = TextVectors(tmp_path / RUN_VECTORS).vectors(
        texts, lambda missing: pytest.fail(f"not kept: {missing}")
    )
    np.testing.assert_allclose(kept, model.encode(texts, normalize_embeddings=True), atol=1e-5)


def _joint_pairs() -> pd.DataFrame:
    """Both tasks over one small catalogue: histories of one colour lead to that colour; searches name the
    item in a shop's shorthand ("re-tray" for the red tray)."""
    colours = ["red", "blue", "green", "yellow", "black", "white", "pink", "grey"]
    things = ["mug", "lamp", "cushion", "vase", "candle", "tray"]
    recommend = [
        {"query": f"{c} {a} | {c} {b}", "positive": f"{c} {t}", "item_id": f"{c}-{t}", "task": "recommend"}
        for c in colours
        for a, b, t in zip(things, things[1:] + things[:1], things[2:] + things[:2], strict=True)
    ]
    search = [
        {"query": f"{c[:2]}-{t}", "positive": f"{c} {t}", "item_id": f"{c}-{t}", "task": "search"}
        for c in colours
        for t in things
        for _ in range(2)
    ]
    return pd.DataFrame(recommend + search)


@pytest.mark.parametrize("mode", ["full", "head"])
def test_joint_fine_tuning_mixes_both_tasks_and_reports_each_before_and_after(tmp_path, mode) -> None:
    pairs = _joint_pairs()
    settings = tiny_settings(
        tmp_path,
        finetune_mode=mode,
        finetune_steps=4,
        finetune_batch_size=8,
        learning_rate=1e-4,
        finetune_holdout_pairs=8,
        finetune_head_steps=60,
        finetune_head_batch_size=8,
    )
    metrics = finetune(pairs, settings, tmp_path / "model", log_every=1)
    assert metrics["pairs"] == 144 and metrics["pairs_by_task"] == {"recommend": 48, "search": 96}
    assert metrics["batch_by_task"] == {"recommend": 4, "search": 4}
    held = metrics["held_out"]
    print(f"\nheld-out recall@10, zero-shot and fine-tuned: {held}")
    assert set(held) == {"recommend", "search"}
    for task, record in held.items():
        assert 2 <= record["pairs"] <= 20 and record["candidates"] == 48, task
        for when in ("zero_shot", "fine_tuned"):
            assert 0 <= record[f"recall_at_10_{when}"] <= 1, (task, when)
    # Colour is what the histories teach; four mixed steps learn it.
    assert held["recommend"]["recall_at_10_fine_tuned"] >= held["recommend"]["recall_at_10_zero_shot"] + 0.25
    saved = json.loads((tmp_path / "model" / "finetune_metrics.json").read_text())
    assert saved["held_out"] == held and saved["pairs_by_task"] == metrics["pairs_by_task"]
    # A first night: what it would replace is the zero-shot model, and the fine-tune beat it.
    assert metrics["encoder"]["shipped"] == "fine_tuned" and metrics["encoder"]["promoted_run"] is None


def test_held_out_pairs_are_whole_users_and_queries_never_trained_on_a_later_night() -> None:
    users = [f"u{i}" for i in range(400)]
    night = pd.DataFrame(
        {
            "user_id": [u for u in users for _ in range(3)],
            "query": [f"history {u} {n}" for u in users for n in range(3)],
            "positive": "an item",
            "item_id": [f"i{n}" for _ in users for n in range(3)],
            "task": "recommend",
        }
    )
    searches = pd.DataFrame(
        {
            "query": [f"q{n % 150}" for n in range(600)],
            "positive": "an item",
            "item_id": "i0",
            "task": "search",
        }
    )
    first = pd.concat([night, searches], ignore_index=True)
    settings = Settings(finetune_holdout_pairs=60)
    train, held = _hold_out(first, settings)
    assert 30 <= len(held["recommend"]) <= 100 and 30 <= len(held["search"]) <= 100
    assert not set(held["recommend"]["user_id"]) & set(train["user_id"].dropna()), "a user is held out whole"
    assert not set(held["search"]["query"]) & set(train["query"]), "a query is held out whole"
    # A later night: more users and searches. What it holds out of the old ones was held out before, so
    # the model trained on the first night never saw it.
    later = pd.concat(
        [
            first,
            night.assign(user_id="new-" + night["user_id"]),
            searches.assign(query="new-" + searches["query"]),
        ],
        ignore_index=True,
    )
    _, held_later = _hold_out(later, settings)
    for task, key in (("recommend", "user_id"), ("search", "query")):
        old = set(held_later[task][key]) & set(first[key])
        assert old and old <= set(held[task][key]), task


def test_the_model_in_production_stays_when_tonights_fine_tune_does_not_beat_it(tmp_path) -> None:
    """The gate pattern for the encoder. Night 1 trains at learning rate 0, so its model is the zero-shot
    one: no better, and the zero-shot model ships. Night 2 trains properly and ships. Night 3 starts from
    night 2's model (warm start) at learning rate 0: it ties the promoted model, which stays, with its
    vectors, and the record says so."""
    pairs = _joint_pairs()
    knobs = {
        "finetune_mode": "full",
        "finetune_steps": 4,
        "finetune_batch_size": 8,
        "finetune_holdout_pairs": 8,
    }
    nights = {}
    for night, rate, incumbent in (("r1", 0.0, None), ("r2", 1e-4, None), ("r3", 0.0, "r2")):
        settings = tiny_settings(tmp_path, learning_rate=rate, **knobs)
        promoted = tmp_path / incumbent / "model" if incumbent else None
        nights[night] = finetune(pairs, settings, tmp_path / night / "model", log_every=1, incumbent=promoted)
    first, second, third = (nights[n]["encoder"] for n in ("r1", "r2", "r3"))
    assert first["shipped"] == "zero_shot" and "the zero-shot model stays" in first["message"]
    base = load_model(tiny_settings(tmp_path).resolved_model_name, "cpu", 32)
    shipped = load_model(str(tmp_path / "r1" / "model"), "cpu", 32)
    np.testing.assert_allclose(shipped.encode(["red mug"]), base.encode(["red mug"]), atol=1e-6)
    assert second["shipped"] == "fine_tuned"
    assert third == {
        "shipped": "promoted",
        "best_trained": "full",
        "started_from": "promoted",
        "promoted_run": "r2",
        "message": third["message"],
    }
    assert "the promoted model stays" in third["message"]
    for task, record in nights["r3"]["held_out"].items():
        assert record["recall_at_10_promoted"] == record["recall_at_10_fine_tuned"], task
    weights = "model.safetensors"
    assert (tmp_path / "r3" / "model" / weights).read_bytes() == (
        tmp_path / "r2" / "model" / weights
    ).read_bytes()
    # The run's vectors are the promoted model's, for the embed stage to read; the scratch copy is gone.
    vectors = TextVectors(tmp_path / "r3" / RUN_VECTORS)
    assert vectors.known(pairs["positive"].unique().tolist()) == pairs["positive"].nunique()
    assert not (tmp_path / "r3" / f"{RUN_VECTORS}_incumbent").exists()
    saved = json.loads((tmp_path / "r3" / "model" / "finetune_metrics.json").read_text())
    assert saved["encoder"]["shipped"] == "promoted"


def test_recall_at_10_finds_matching_texts_and_misses_scrambled_ones(tmp_path) -> None:
    """The held-out measure itself: a query that is its item's text is found; a query for another item's
    text mostly is not."""
    settings = tiny_settings(tmp_path)
    model = load_model(settings.resolved_model_name, "cpu", 32)
    pairs = _joint_pairs()
    catalogue = pairs.drop_duplicates("item_id")[["item_id", "positive"]].reset_index(drop=True)
    exact = catalogue.assign(query=catalogue["positive"])
    cache = TextVectors(tmp_path / "vectors")
    assert recall_at_k(encoder_of(model, 64), exact, catalogue, cache, k=1) == 1.0
    scrambled = exact.assign(item_id=np.roll(exact["item_id"].to_numpy(), 7))
    assert recall_at_k(encoder_of(model, 64), scrambled, catalogue, cache, k=10) < 0.5
    # The second measure read every text's vector back: the catalogue and the queries are the same texts.
    assert len(cache) == len(catalogue)


def test_each_batch_holds_the_search_share() -> None:
    task = _joint_pairs()["task"]
    plan = {
        share: _batch_plan(task, Settings(finetune_search_share=share), 32) for share in (0, 0.01, 0.25, 1)
    }
    assert plan == {
        0: {"recommend": 32},
        0.01: {"recommend": 31, "search": 1},
        0.25: {"recommend": 24, "search": 8},
        1: {"search": 32},
    }
    recommend_only = task[task == "recommend"]
    assert _batch_plan(recommend_only, Settings(), 32) == {"recommend": 32}
    assert set(_tasks(pd.DataFrame({"query": ["a"]}))) == {"recommend"}, "old pairs without a task"


def test_the_demo_shops_pairs_hold_both_tasks_and_fine_tune_together(workspace, tmp_path) -> None:
    """Search pairs come from the governed log (normalised, PII-free, no bot, before the scoring time), one
    per search and item; a real run of a few steps on the joint pairs reports both tasks."""
    items = training_data.item_texts(workspace)
    as_of = training_data.scoring_time(workspace)
    pairs = training_data.joint_pairs(workspace, items, as_of)
    assert list(pairs.columns) == training_data.PAIR_COLUMNS
    assert set(pairs["task"]) == {"recommend", "search"}
    assert pairs["task"].is_monotonic_increasing, "recommendation pairs first, then search pairs"
    search = pairs[pairs["task"] == "search"]
    assert len(search) >= 200
    assert (pd.to_datetime(search["event_timestamp"]) < as_of).all()
    assert (search["query"] == search["query"].str.lower().str.split().str.join(" ")).all()
    assert not search["query"].str.contains(r"@|\+44|<|'").any(), "raw PII or markup reached a pair"
    texts = dict(zip(items["item_id"], items["text"], strict=True))
    assert (search["positive"] == search["item_id"].map(texts)).all()
    raw = pd.read_parquet(workspace.resolved_raw_path / "searches.parquet")
    bot = raw["user_id"].value_counts().index[0]  # the bot issues more searches than anyone
    assert not search["user_id"].eq(bot).any(), "the bot's quarantined searches never train the model"
    assert search["item_id"].isin(items["item_id"]).all()

    settings = workspace.model_copy(
        update={"finetune_steps": 2, "finetune_batch_size": 8, "finetune_holdout_pairs": 20}
    )
    metrics = finetune(pairs, settings, tmp_path / "model")
    print(f"\ndemo shop, held-out recall@10: {metrics['held_out']}")
    # Both ways trained (the default): the full model in mixed batches, the head on the frozen vectors.
    assert set(metrics["trained"]) == {"head", "full"} and metrics["best"] in {"head", "full"}
    assert metrics["trained"]["full"]["batch_by_task"] == {"recommend": 4, "search": 4}
    # Fewer than finetune_head_pairs of each task: the head learns from every training pair.
    assert metrics["trained"]["head"]["pairs_trained_on"] == metrics["trained"]["full"]["pairs_trained_on"]
    assert all(10 <= r["pairs"] <= 40 for r in metrics["held_out"].values()), metrics["held_out"]
    for record in metrics["held_out"].values():
        assert record["recall_at_10_fine_tuned"] == record[f"recall_at_10_{metrics['best']}"]


def test_a_workspace_without_a_search_log_gives_no_search_pairs(tmp_path) -> None:
    """Online Retail and events-only folders have no fct_searches: the pairs are recommendation only."""
    settings = tiny_settings(tmp_path)
    items = pd.DataFrame({"item_id": ["I1"], "text": ["Red Mug (Kitchen)"]})
    pairs = training_data.search_pairs(settings, items, pd.Timestamp("2026-10-31"))
    assert pairs.empty and list(pairs.columns) == training_data.PAIR_COLUMNS
