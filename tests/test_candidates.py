from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from retrieval import candidates as cand
from retrieval import content as content_module
from retrieval import index as faiss_index

AS_OF = pd.Timestamp("2026-01-31")


def _lines() -> pd.DataFrame:
    rows = [
        # u1 and u2 both buy a+b; u3 buys a only -> b is u3's co-purchase neighbour.
        ("u1", "a", "2026-01-01"),
        ("u1", "b", "2026-01-02"),
        ("u2", "a", "2026-01-03"),
        ("u2", "b", "2026-01-04"),
        ("u2", "c", "2026-01-05"),
        ("u3", "a", "2026-01-20"),
        ("u3", "a", "2026-01-25"),
        ("u4", "d", "2025-06-01"),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ordered_at"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    return frame


USERS = np.array(["u1", "u2", "u3", "u4"])
ITEMS = np.array(["a", "b", "c", "d"])
TEXTS = np.array(["red heart mug", "blue star plate", "red heart jar", "garden gnome"])


def test_co_purchase_proposes_items_bought_by_similar_users_never_own_items() -> None:
    lines = _lines()
    matrix = cand.user_item_matrix(lines, USERS, ITEMS)
    assert matrix.shape == (4, 4) and matrix.max() == 1.0
    co = cand.co_purchase(matrix, USERS, ITEMS, k=3)
    u3 = co[co["user_id"] == "u3"].sort_values("source_score", ascending=False)
    assert u3["item_id"].iloc[0] == "b"
    assert "a" not in set(u3["item_id"])
    assert (co["source"] == "co_purchase").all() and (co["source_score"] > 0).all()


def test_repeat_scores_frequent_recent_items_higher() -> None:
    rep = cand.repeat(_lines(), AS_OF, half_life_days=90.0)
    score = rep.set_index(["user_id", "item_id"])["source_score"]
    assert score[("u3", "a")] > score[("u1", "a")]  # twice and recent beats once and older
    assert score[("u4", "d")] < score[("u1", "a")]  # months old decays


def test_popular_ranks_recent_distinct_buyers_for_every_user() -> None:
    pop = cand.popular(_lines(), USERS, AS_OF, k=2)
    assert len(pop) == len(USERS) * 2
    first = pop[pop["user_id"] == "u1"].sort_values("source_score", ascending=False)
    assert first["item_id"].iloc[0] == "a"  # 3 distinct buyers in the last 30 days


def test_embedding_candidates_come_from_the_faiss_index() -> None:
    item_vectors = np.eye(4, dtype=np.float32)
    index, _ = faiss_index.build(item_vectors, ann_threshold=100)
    user_vectors = np.array([[0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float32)
    emb = cand.embedding(index, user_vectors, np.array(["u1", "u2"]), ITEMS, k=1)
    assert dict(zip(emb["user_id"], emb["item_id"], strict=True)) == {"u1": "c", "u2": "a"}


def test_merge_keeps_one_row_per_pair_with_every_source_score_and_a_reason() -> None:
    frames = [
        pd.DataFrame({"user_id": ["u1"], "item_id": ["a"], "source": ["embedding"], "source_score": [0.9]}),
        pd.DataFrame({"user_id": ["u1"], "item_id": ["a"], "source": ["repeat"], "source_score": [0.5]}),
        pd.DataFrame({"user_id": ["u1"], "item_id": ["b"], "source": ["popular"], "source_score": [1.0]}),
    ]
    merged = cand.merge(frames).set_index("item_id")
    assert len(merged) == 2
    assert merged.loc["a", "source"] == "repeat"  # repeat outranks embedding as the reason
    assert merged.loc["a", "embedding"] == pytest.approx(0.9) and merged.loc["a", "repeat"] == pytest.approx(
        0.5
    )
    assert merged.loc["b", "source"] == "popular" and merged.loc["b", "embedding"] == 0


def test_generate_merges_every_source_into_one_row_per_pair() -> None:
    lines = _lines()
    index, _ = faiss_index.build(np.eye(4, dtype=np.float32), ann_threshold=100)
    queries = cand.Queries(USERS, np.eye(4, dtype=np.float32))
    catalogue = cand.Catalogue(index, ITEMS, TEXTS)
    budget = cand.Budget(k=2, popular_k=1, als_dim=4, seed=0)
    merged = cand.generate(lines, queries, catalogue, AS_OF, budget)
    assert set(merged.columns) >= {*cand.SOURCES, "source"}
    assert not merged.duplicated(["user_id", "item_id"]).any()
    assert (merged["als"] > 0).any()
    # the cut is respected: a purchase on the as-of day itself is not history
    late = pd.concat([lines, pd.DataFrame({"user_id": ["u4"], "item_id": ["c"], "ordered_at": [AS_OF]})])
    again = cand.generate(late, queries, catalogue, AS_OF, budget)
    assert not ((again["user_id"] == "u4") & (again["item_id"] == "c") & (again["repeat"] > 0)).any()


def test_without_the_embedding_source_no_candidate_comes_from_the_encoder() -> None:
    """`embedding_candidates` off (the evaluation's ablation): the other sources propose the same pairs
    with the same scores, and the embedding column is zero everywhere."""
    index, _ = faiss_index.build(np.eye(4, dtype=np.float32), ann_threshold=100)
    queries, catalogue = cand.Queries(USERS, np.eye(4, dtype=np.float32)), cand.Catalogue(index, ITEMS, TEXTS)
    budget = cand.Budget(k=2, popular_k=1, als_dim=4, seed=0)
    both = cand.generate(_lines(), queries, catalogue, AS_OF, budget)
    without = cand.generate(_lines(), queries, catalogue, AS_OF, replace(budget, embedding=False))
    assert (both["embedding"] > 0).any() and (without["embedding"] == 0).all()
    others = [s for s in cand.SOURCES if s != "embedding"]
    proposed = both[(both[others] > 0).any(axis=1)].drop(columns=["embedding", "source"])
    pd.testing.assert_frame_equal(
        proposed.reset_index(drop=True), without.drop(columns=["embedding", "source"]).reset_index(drop=True)
    )
    # Dropping the source from merged candidates (the rank stage's embedding gate) gives the same frame,
    # each row's reason included.
    pd.testing.assert_frame_equal(
        cand.without_source(both, "embedding").reset_index(drop=True), without.reset_index(drop=True)
    )


def test_a_listed_item_nobody_bought_reaches_a_shopper_by_its_title() -> None:
    """The content source proposes unsold items whose titles are near the user's history, and every
    candidate carries the two title scores the ranker reads."""
    items = np.array(["a", "b", "e", "f"])
    texts = np.array(["red heart mug", "blue star plate", "red heart jar", "garden gnome"])
    lines = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["a", "a", "b"],
            "ordered_at": pd.to_datetime(["2026-01-02", "2026-01-09", "2026-01-03"]),
        }
    )
    index, _ = faiss_index.build(np.eye(4, dtype=np.float32), ann_threshold=100)
    queries = cand.Queries(np.array(["u1", "u2"]), np.eye(4, dtype=np.float32)[[1, 3]])
    budget = cand.Budget(k=1, popular_k=1, als_dim=2, seed=0)
    merged = cand.generate(lines, queries, cand.Catalogue(index, items, texts), AS_OF, budget)
    content = merged[merged["content"] > 0]
    assert list(zip(content["user_id"], content["item_id"], strict=True)) == [("u1", "e")]
    row = merged.set_index(["user_id", "item_id"]).loc[("u1", "e")]
    assert row["source"] == "content" and row["title_score"] > 0
    # u1 bought e's look-alike a twice: the transfer score counts both, weighted by their similarity
    vectors = content_module.title_vectors(texts)
    similarity = float((vectors[0] @ vectors[2].T).toarray()[0, 0])
    assert row["title_transfer_score"] == pytest.approx(2 * similarity, rel=1e-5)
    assert {"title_score", "title_transfer_score"} <= set(merged.columns)
