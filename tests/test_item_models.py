"""The field's cheap models (retrieval/item_models.py) and their tuning on a validation window
(scoring/evaluation/tuning.py), on small hand-made histories."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from retrieval import item_models
from scoring.evaluation import protocol, tuning

pytestmark = pytest.mark.unit


def _binary(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for r, items in enumerate(rows):
        dense[r, items] = 1.0
    return sp.csr_matrix(dense)


def test_ease_recommends_what_is_always_bought_with_the_users_items() -> None:
    # Items 0 and 1 always go together, 2 and 3 together; nobody buys 0 with 3.
    history = _binary([[0, 1], [0, 1], [0, 1], [2, 3], [2, 3], [2, 3], [0, 1, 4]], 5)
    weights = item_models.ease_weights(history, lam=1.0)
    assert np.allclose(np.diag(weights), 0.0)
    scores = item_models.ease_scores(_binary([[0], [3]], 5), weights)
    assert scores[0].argmax() == 1 and scores[1].argmax() == 2
    assert scores[0, 1] > scores[0, 3] and scores[1, 2] > scores[1, 0]


def test_a_stronger_ease_penalty_shrinks_the_weights() -> None:
    history = _binary([[0, 1], [0, 1], [1, 2], [0, 2], [0, 1, 2]], 3)
    weak, strong = item_models.ease_weights(history, 0.5), item_models.ease_weights(history, 50.0)
    assert np.abs(strong).sum() < np.abs(weak).sum()


def test_a_purchase_one_half_life_ago_counts_half() -> None:
    as_of = pd.Timestamp("2024-03-01")
    lines = pd.DataFrame(
        {
            "user_id": ["u", "u", "u", "v"],
            "item_id": ["a", "b", "b", "a"],
            "ordered_at": as_of - pd.to_timedelta([30, 0, 60, 90], unit="D"),
        }
    )
    counts = item_models.decayed_counts(lines, np.array(["u", "v"]), np.array(["a", "b"]), as_of, 30.0)
    assert counts.toarray() == pytest.approx(np.array([[0.5, 1.25], [0.125, 0.0]]))


def _baskets() -> pd.DataFrame:
    t0 = pd.Timestamp("2024-01-01")
    rows = [
        ("u1", "old", 0), ("u1", "new", 10),  # u1 moved from 'old' to 'new'
        ("u2", "new", 1), ("u2", "side", 1), ("u2", "new", 5), ("u2", "side", 5),
        ("u3", "new", 2), ("u3", "side", 2),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "day"])
    frame["ordered_at"] = t0 + pd.to_timedelta(frame["day"], unit="D")
    return frame.assign(basket=frame["ordered_at"])


def test_tifu_weighs_recent_baskets_more_and_borrows_from_similar_shoppers() -> None:
    users, items = np.array(["u1", "u2", "u3"]), np.array(["old", "new", "side"])
    params = item_models.TifuParams(neighbours=1, alpha=0.7, r_basket=0.5, r_group=0.5, group_size=7)
    vectors = item_models.tifu_user_vectors(_baskets(), users, items, params)
    assert vectors.sum(axis=1) == pytest.approx([1.0, 2.0, 2.0])  # a mean of baskets, per user
    assert vectors[0, 1] > vectors[0, 0]  # the newer basket weighs more
    scores = item_models.tifu_scores(vectors, np.array([0]), params)[0]
    assert scores[1] > scores[0] > 0  # own items first, by recency ...
    assert scores[2] > 0  # ... and a neighbour's item u1 never bought
    own_only = item_models.tifu_scores(vectors, np.array([0]), params.__class__(neighbours=1, alpha=1.0))
    assert own_only[0, 2] == 0


def test_tuning_picks_the_grid_point_that_does_best_on_the_validation_window() -> None:
    t0 = pd.Timestamp("2024-01-01")
    lines = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u1", "u2"],
            "item_id": ["a", "b", "a", "c", "b", "c"],
            "ordered_at": t0 + pd.to_timedelta([0, 1, 0, 1, 40, 41], unit="D"),
        }
    )
    validation = protocol.split(lines, cut=str(t0 + pd.Timedelta(days=30)))

    def fit(split: protocol.Split, right: bool) -> np.ndarray:
        # The right model scores each user's validation items highest, the wrong one lowest.
        scores = np.zeros((len(split.users), len(split.items)))
        for row, truth in enumerate(split.truth):
            scores[row, list(truth)] = 1.0 if right else -1.0
        return scores

    best, tried = tuning.choose(fit, [False, True], validation, k=2)
    assert best is True and tried[1][1] > tried[0][1]
