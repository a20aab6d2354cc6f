"""The vectors-by-text cache (scoring/training/text_vectors.py): a text is computed once, in any order,
across processes, and never read for another encoder."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.settings import Settings
from scoring.training.finetune import load_model
from scoring.training.text_vectors import TextVectors, base_model_cache, encode

pytestmark = pytest.mark.unit


class Encoder:
    """The real base encoder, recording what it was asked to compute (the cache's job is not to ask)."""

    def __init__(self) -> None:
        settings = Settings()
        self.model = load_model(settings.resolved_model_name, "cpu", 32)
        self.asked: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.asked.append(list(texts))
        return encode(self.model, texts, 8, "test texts")


def test_each_distinct_text_is_computed_once_and_read_back_in_order(tmp_path) -> None:
    encoder = Encoder()
    cache = TextVectors(tmp_path / "c")
    first = cache.vectors(["mug", "red mug", "mug"], encoder)
    assert encoder.asked == [["mug", "red mug"]]
    assert np.array_equal(first[0], first[2]) and not np.allclose(first[0], first[1])
    fresh = encode(encoder.model, ["mug", "red mug"], 8, "fresh")
    assert np.allclose(first[:2], fresh, atol=1e-5)
    # Another process, later: only the new text is computed, the rest read from disk as they were.
    again = TextVectors(tmp_path / "c")
    assert len(again) == 2 and again.known(["red mug", "lamp"]) == 1
    got = again.vectors(["lamp", "red mug", "mug"], encoder)
    assert encoder.asked[-1] == ["lamp"]
    assert np.array_equal(got[1:], first[[1, 0]])
    assert np.allclose(got[0], encode(encoder.model, ["lamp"], 8, "fresh")[0], atol=1e-5)
    again.clear()
    assert len(TextVectors(tmp_path / "c")) == 0


def test_the_base_models_cache_is_keyed_by_model_files_and_sequence_length(tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"one")
    folder = base_model_cache(tmp_path, str(model), 96).folder
    assert base_model_cache(tmp_path, str(model), 96).folder == folder
    assert base_model_cache(tmp_path, str(model), 48).folder != folder
    (model / "weights.bin").write_bytes(b"other weights")
    assert base_model_cache(tmp_path, str(model), 96).folder != folder


def test_every_digest_reads_back_even_one_ending_in_a_zero_byte(tmp_path) -> None:
    """numpy's S16 strips trailing zero bytes: a digest ending in one (1 text in 256) once missed on every
    read, and was computed and appended again each night."""
    texts = [f"item {n}" for n in range(1000)]
    asked: list[str] = []

    def compute(missing: list[str]) -> np.ndarray:
        asked.extend(missing)
        return np.arange(len(missing) * 4, dtype=np.float32).reshape(-1, 4)

    first = TextVectors(tmp_path / "c").vectors(texts, compute)
    again = TextVectors(tmp_path / "c")
    assert again.known(texts) == len(texts) == len(asked)
    assert np.array_equal(again.vectors(texts, compute), first) and len(asked) == len(texts)
