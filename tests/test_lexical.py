"""retrieval/lexical.py on a small real catalogue: bm25s ranking, symspell typo correction, save/load."""

from __future__ import annotations

import time

import numpy as np
import pytest

from retrieval.lexical import LexicalIndex, stems, words

TITLES = {
    "a1": "Single Handle Kitchen Faucet in Chrome",
    "a2": "Two Handle Bathroom Faucet with Pop-Up Drain",
    "a3": "Elongated Toilet Seat in White",
    "a4": "Round Closed Front Toilet Seat",
    "a5": "4 ft. x 8 ft. Wall Paneling Birch",
    "a6": "Vinyl Plank Flooring Oak 6 in. x 36 in.",
    "a7": "Cordless Drill Driver 20V MAX Kit DCD771C2",
    "a8": "Door Handle Set Satin Nickel",
    "a9": "Hansel Garden Gnome",
    "a10": "Vinyl Siding Trim",
}


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    return LexicalIndex.build(list(TITLES), list(TITLES.values()))


def test_tokens_are_lowercased_stemmed_and_stopword_free():
    assert words("Faucets, in CHROME!") == ["faucets", "in", "chrome"]
    assert stems(words("Faucets in Chrome")) == ["faucet", "chrome"]


def test_exact_query_ranks_the_matching_item_first(index):
    ids, scores = index.search("toilet seat elongated", 3)
    assert ids[0] == "a3"
    assert set(ids) == {"a3", "a4"}  # nothing else shares a word; zero scores are never returned
    assert np.all(np.diff(scores) <= 0)


def test_typo_query_finds_the_item_only_with_typo_tolerance(index):
    plain = LexicalIndex.build(list(TITLES), list(TITLES.values()), typo_tolerant=False)
    assert len(plain.search("toliet", 5)[0]) == 0
    ids, _ = index.search("toliet", 5)
    assert set(ids) == {"a3", "a4"}


def test_the_distance_penalty_trades_edits_against_catalogue_frequency():
    """The typo "hanlel" is one edit from "hansel" (1 title) and two from "handle" (3 titles): by default
    the nearer word wins; with a penalty below log(3) per edit, the more frequent one does."""
    strict = LexicalIndex.build(list(TITLES), list(TITLES.values()))
    assert strict.correct("single hanlel faucet").changed == {"hanlel": "hansel"}
    lenient = LexicalIndex.build(list(TITLES), list(TITLES.values()), distance_penalty=0.5)
    assert lenient.correct("single hanlel faucet").changed == {"hanlel": "handle"}
    assert lenient.search("single hanlel faucet", 1)[0][0] == "a1"


def test_numbers_units_and_model_numbers_are_never_corrected(index):
    for query in ("dcd771c3 drill", "4x9ft paneling", "2000 seat"):
        assert index.correct(query).corrected == index.correct(query).tokens
    assert index.search("DCD771C2", 1)[0][0] == "a7"


def test_short_and_known_words_are_left_alone(index):
    assert index.correct("oak kit").changed == {}
    assert index.correct("vinyl").changed == {}
    assert index.correct("vinly").changed == {"vinly": "vinyl"}  # one transposition
    assert index.correct("vynil").changed == {}  # two edits: too many for a five-letter word


def test_k_limits_and_empty_queries(index):
    assert len(index.search("handle", 1)[0]) == 1
    ids, scores = index.search("", 5)
    assert len(ids) == 0 and len(scores) == 0
    ids, _ = index.search("the and of", 5)  # stop words only
    assert len(ids) == 0


def test_save_load_roundtrip(index, tmp_path):
    index.save(tmp_path / "lexical")
    loaded = LexicalIndex.load(tmp_path / "lexical")
    for query in ("toliet seat", "vinyl", "single hanlel faucet", "drill"):
        a, sa = index.search(query, 5)
        b, sb = loaded.search(query, 5)
        assert list(a) == list(b)
        np.testing.assert_allclose(sa, sb)
    assert loaded.correct("vinly").changed == {"vinly": "vinyl"}


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="item ids"):
        LexicalIndex.build(["a"], ["x", "y"])


def test_a_query_takes_about_a_millisecond_on_a_few_thousand_items():
    rng = np.random.default_rng(0)
    vocabulary = [f"{a}{b}" for a in ("drill", "saw", "lamp", "pipe", "tile", "door") for b in range(60)]
    texts = [" ".join(rng.choice(vocabulary, size=8)) for _ in range(5000)]
    index = LexicalIndex.build([f"i{i}" for i in range(5000)], texts)
    index.search("drill3 saw", 10)  # builds the speller once
    queries = [f"{rng.choice(vocabulary)} {rng.choice(vocabulary)}x" for _ in range(200)]
    start = time.perf_counter()
    for query in queries:
        index.search(query, 100)
    per_query = (time.perf_counter() - start) / len(queries)
    assert per_query < 0.01, f"{per_query * 1000:.2f} ms per query"
