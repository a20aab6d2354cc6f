"""retrieval/hybrid.py with real bm25s and FAISS: reciprocal-rank fusion, complete scores, filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrieval import index as faiss_index
from retrieval.hybrid import COLUMNS, Filters, HybridRetriever, rrf
from retrieval.lexical import LexicalIndex

# Items 0..29: a category per block of ten, a price rising with the id, a title and a vector that share a
# "concept" per item, so lexical and dense retrieval agree on some items and not on others.
CATEGORIES = ["bath", "kitchen", "garden"]


def catalogue(n: int = 30, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"i{i:03d}" for i in range(n)]
    concepts = ["faucet", "sink", "hose", "lamp", "drill", "tile", "paint", "mower", "shelf", "rug"]
    titles = [f"{concepts[i % 10]} model {i}" for i in range(n)]
    centres = rng.normal(size=(10, dim))
    vectors = centres[np.arange(n) % 10] + 0.3 * rng.normal(size=(n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    items = pd.DataFrame(
        {"item_id": ids, "category": [CATEGORIES[i // 10 % 3] for i in range(n)], "price": np.arange(n) + 1.0}
    )
    return ids, titles, vectors, items, centres


@pytest.fixture(scope="module")
def setup():
    ids, titles, vectors, items, centres = catalogue()
    lexical = LexicalIndex.build(ids, titles)
    index, _ = faiss_index.build(vectors, ann_threshold=10_000)
    retriever = HybridRetriever(lexical, index, ids, items, rrf_k=60)
    return retriever, centres, items


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_rrf_contribution():
    np.testing.assert_allclose(rrf(np.array([1.0, np.nan, 3.0]), 60, 2.0), [2 / 61, 0.0, 2 / 63])


def test_fusion_keeps_both_sides_and_scores_every_candidate(setup):
    retriever, centres, _ = setup
    # The text asks for faucets (items 0, 10, 20); the vector points at lamps (3, 13, 23).
    out = retriever.retrieve("faucet", unit(centres[3]), pool=3)
    assert list(out.columns) == COLUMNS
    lexical_only = set(out.loc[out["dense_rank"].isna(), "item_id"])
    dense_only = set(out.loc[out["lexical_rank"].isna(), "item_id"])
    assert lexical_only == {"i000", "i010", "i020"}
    assert dense_only == {"i003", "i013", "i023"}
    # complete raw scores: a faucet has its cosine, a lamp its (zero) BM25
    assert out["dense_score"].notna().all()
    assert (out.loc[out["item_id"].isin(dense_only), "lexical_score"] == 0).all()
    expected = rrf(out["lexical_rank"].to_numpy(), 60) + rrf(out["dense_rank"].to_numpy(), 60)
    np.testing.assert_allclose(out["fused_score"], expected)
    assert out["fused_score"].is_monotonic_decreasing


def test_an_item_both_retrievers_find_is_ranked_first(setup):
    retriever, centres, _ = setup
    out = retriever.retrieve("lamp model", unit(centres[3]), pool=5)
    assert out.iloc[0]["item_id"] in {"i003", "i013", "i023"}
    assert out.iloc[0]["lexical_rank"] <= 3 and out.iloc[0]["dense_rank"] <= 3


def test_weights_tilt_the_fusion(setup):
    retriever, centres, items = setup
    tilted = HybridRetriever(
        retriever.lexical, retriever.index, retriever.item_ids, items, lexical_weight=0.0, dense_weight=1.0
    )
    out = tilted.retrieve("faucet", unit(centres[3]), pool=3)
    assert set(out.head(3)["item_id"]) == {"i003", "i013", "i023"}


def test_category_and_price_filters_still_fill_the_pool(setup):
    retriever, centres, _ = setup
    # pointing at faucets; the kitchen block (10..19) has only one faucet, yet pool=4 comes back full
    out = retriever.retrieve("faucet sink hose", unit(centres[0]), pool=4, filters={"category": ["kitchen"]})
    assert set(out["item_id"]).issubset({f"i{i:03d}" for i in range(10, 20)})
    assert out["dense_rank"].notna().sum() == 4
    priced = retriever.retrieve("faucet", unit(centres[0]), pool=4, filters={"min_price": 5, "max_price": 12})
    prices = priced["item_id"].str[1:].astype(int) + 1
    assert prices.between(5, 12).all() and priced["dense_rank"].notna().sum() == 4
    # a filter that lets nothing through returns nothing, without error
    empty = retriever.retrieve("faucet", unit(centres[0]), pool=4, filters={"category": "nowhere"})
    assert empty.empty


def test_bad_filters_are_refused(setup):
    retriever, centres, _ = setup
    with pytest.raises(ValueError, match="unknown filter"):
        retriever.retrieve("faucet", unit(centres[0]), pool=3, filters={"colour": "red"})
    with pytest.raises(ValueError, match="min_price"):
        Filters.parse({"min_price": 10, "max_price": 1})
    bare = HybridRetriever(retriever.lexical, retriever.index, retriever.item_ids)
    with pytest.raises(ValueError, match="no category"):
        bare.retrieve("faucet", unit(centres[0]), pool=3, filters={"category": "bath"})


def test_lexical_only_without_a_vector(setup):
    retriever, _, _ = setup
    out = retriever.retrieve("toliet faucet", None, pool=10)
    assert set(out["item_id"]) == {"i000", "i010", "i020"}
    assert out["dense_rank"].isna().all()


def test_retrieve_many_matches_retrieve(setup):
    retriever, centres, _ = setup
    queries = ["faucet", "lamp model", "drill"]
    vectors = np.stack([unit(centres[0]), unit(centres[3]), unit(centres[4])])
    many = retriever.retrieve_many(queries, vectors, pool=5, filters={"max_price": 25})
    for i, query in enumerate(queries):
        one = retriever.retrieve(query, vectors[i], pool=5, filters={"max_price": 25})
        got = many[many["query_index"] == i].drop(columns="query_index").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, one)


def test_ivf_index_with_filters():
    ids, titles, vectors, items, centres = catalogue(n=400, seed=1)
    index, info = faiss_index.build(vectors, ann_threshold=50)
    assert info.kind == "ivf_flat"
    vectors_by_row = vectors  # IVF indexes cannot give vectors back: pass them
    retriever = HybridRetriever(
        LexicalIndex.build(ids, titles), index, ids, items, item_vectors=vectors_by_row
    )
    out = retriever.retrieve("drill", unit(centres[4]), pool=20, filters={"category": ["garden"]})
    assert len(out) > 0 and set(items.set_index("item_id").loc[out["item_id"], "category"]) == {"garden"}
    assert out["dense_score"].notna().all()
