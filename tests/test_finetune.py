import json

import pandas as pd
import pytest

from scoring.training.finetune import finetune, load_model
from tests.conftest import tiny_settings

pytestmark = pytest.mark.integration  # loads the real model, fine-tunes it and saves a checkpoint


def test_fine_tuning_lowers_the_in_batch_loss_and_saves_a_loadable_checkpoint(tmp_path) -> None:
    # A small real task: a user who bought colour X items next buys another colour X item.
    colours = ["red", "blue", "green", "yellow", "black", "white", "pink", "grey"]
    things = ["mug", "lamp", "cushion", "vase", "candle", "tray"]
    rows = [
        {"query": f"{c} {a} | {c} {b}", "positive": f"{c} {t}", "item_id": f"{c}-{t}"}
        for c in colours
        for a, b, t in zip(things, things[1:] + things[:1], things[2:] + things[:2], strict=True)
    ]
    pairs = pd.DataFrame(rows)
    settings = tiny_settings(tmp_path, finetune_steps=12, finetune_batch_size=8, learning_rate=1e-4)
    metrics = finetune(pairs, settings, tmp_path / "model", log_every=1)
    assert metrics["steps"] == 12 and metrics["pairs"] == len(pairs)
    assert metrics["loss_last_quarter_mean"] < metrics["loss_first_quarter_mean"]
    assert metrics["device"] == "cpu" and metrics["bf16"] is False
    saved = json.loads((tmp_path / "model" / "finetune_metrics.json").read_text())
    assert saved["loss_first"] == metrics["loss_first"]
    model = load_model(str(tmp_path / "model"), "cpu", 32)
    assert model.encode(["red mug"]).shape == (1, 384)
