"""The field's cheap models (retrieval/item_models.py) and their tuning on a validation window
(scoring/evaluation/tuning.py), on small hand-made histories."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from retrieval import item_models
from scoring.evaluation import peers, protocol, tuning

pytestmark = pytest.mark.unit


def _binary(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for r, items in enumerate(rows):
        dense[r, items] = 1.0
    return sp.csr_matrix(dense)


def test_ease_recommends_what_is_always_bought_with_the_users_items() -> None:
    # Items 0 and 1 always go together, 2 and 3 together; nobody buys 0 with 3.
    history = _binary([[0, 1], [0, 1], [0, 1], [2, 3], [2, 3], [2, 3], [0, 1, 4]], 5)
    weights = item_models.ease_weights(item_models.item_gram(history), lam=1.0)
    assert np.allclose(np.diag(weights), 0.0)
    scores = item_models.ease_scores(_binary([[0], [3]], 5), weights)
    assert scores[0].argmax() == 1 and scores[1].argmax() == 2
    assert scores[0, 1] > scores[0, 3] and scores[1, 2] > scores[1, 0]


def test_a_stronger_ease_penalty_shrinks_the_weights() -> None:
    history = _binary([[0, 1], [0, 1], [1, 2], [0, 2], [0, 1, 2]], 3)
    gram = item_models.item_gram(history)
    weak, strong = item_models.ease_weights(gram, 0.5), item_models.ease_weights(gram, 50.0)
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

    grid = [False, True]
    best, tried = tuning.choose(((p, fit(validation, p)) for p in reversed(grid)), grid, validation, k=2)
    assert best is True and [p for p, _ in tried] == grid and tried[1][1] > tried[0][1]


def _random_history(seed: int, users: int, items: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, items)) < 0.15).astype(np.float32))


def test_ease_on_the_item_head_fits_the_most_bought_items_and_leaves_the_tail_unscored() -> None:
    everyone = _random_history(0, 60, 12)
    everyone[:, 3] = 1.0  # item 3 is bought by everyone: always in the head
    everyone = sp.csr_matrix(everyone)
    buyers = np.asarray(everyone.getnnz(axis=0))
    head = item_models.ease_head(everyone, 5)
    assert len(head) == 5 and 3 in head
    assert buyers[head].min() >= np.delete(buyers, head).max()  # no tail item has more buyers
    users = everyone[:7]
    (bounded,) = item_models.ease_grid_scores(everyone, users, [10.0], 5)
    tail = np.setdiff1d(np.arange(12), head)
    assert not bounded[:, tail].any() and bounded[:, head].any()
    # The head alone is a whole EASE on those columns; a bound the catalogue fits in changes nothing.
    (alone,) = item_models.ease_grid_scores(everyone[:, head], users[:, head], [10.0], None)
    assert np.array_equal(bounded[:, head], alone)
    (whole,) = item_models.ease_grid_scores(everyone, users, [10.0], 12)
    expected = item_models.ease_scores(users, item_models.ease_weights(item_models.item_gram(everyone), 10.0))
    assert np.array_equal(whole, expected)


def test_a_tuning_grid_scores_each_point_exactly_as_fitting_it_alone() -> None:
    t0 = pd.Timestamp("2024-01-01")
    rng = np.random.default_rng(3)
    lines = pd.DataFrame(
        {
            "user_id": [f"u{u:02d}" for u in rng.integers(0, 30, 600)],
            "item_id": [f"i{i:02d}" for i in rng.integers(0, 25, 600)],
            "ordered_at": t0 + pd.to_timedelta(rng.integers(0, 90 * 24, 600), unit="h"),
        }
    )
    split = protocol.split(lines, cut=str(t0 + pd.Timedelta(days=70)))
    tifu_grid = [
        item_models.TifuParams(neighbours=n, alpha=a, r_basket=rb, r_group=rg)
        for n in (3, 10)
        for a in (0.5, 0.9)
        for rb, rg in ((1.0, 0.6), (0.9, 0.7))
    ]
    shared = dict(peers.grid_scores("tifu_knn", split, tifu_grid))
    assert set(shared) == set(tifu_grid)
    for params in tifu_grid:
        vectors = item_models.tifu_user_vectors(
            split.train.assign(basket=split.train["ordered_at"]),
            np.array(sorted(split.train["user_id"].unique())),
            split.items,
            params,
        )
        rows = pd.Index(sorted(split.train["user_id"].unique())).get_indexer(split.users)
        alone = item_models.tifu_scores(vectors, rows, params)
        assert np.array_equal(shared[params], alone), params
    everyone = np.array(sorted(split.train["user_id"].unique()))
    gram = item_models.item_gram(protocol.user_item_matrix(split, everyone))
    evaluated = protocol.user_item_matrix(split, split.users)
    for lam, scores in peers.grid_scores("ease", split, [1.0, 10.0, 100.0]):
        assert np.array_equal(scores, item_models.ease_scores(evaluated, item_models.ease_weights(gram, lam)))


def _tuned_history(users: int, days: int) -> pd.DataFrame:
    t0 = pd.Timestamp("2024-01-01")
    rng = np.random.default_rng(5)
    n = users * 12
    return pd.DataFrame(
        {
            "user_id": [f"u{u:03d}" for u in rng.integers(0, users, n)],
            "item_id": [f"i{i:02d}" for i in rng.integers(0, 30, n)],
            "ordered_at": t0 + pd.to_timedelta(rng.integers(0, days * 24, n), unit="h"),
        }
    ).sort_values(["user_id", "item_id", "ordered_at"], ignore_index=True)


def test_the_promoted_runs_knobs_serve_while_the_purchases_barely_moved(tmp_path) -> None:
    from scoring.pipeline import stages
    from scoring.pipeline.run_folder import RunFolder
    from scoring.settings import Settings

    settings = Settings(data_dir=tmp_path, retune_max_days=7, retune_min_change=0.05)
    lines = _tuned_history(40, 120)
    label_start = pd.Timestamp("2024-03-15")
    first_knobs, first = stages._source_knobs(settings, lines, label_start, tmp_path / "new")
    assert first["tuned"] and first["reused_from"] is None
    run = RunFolder.create(settings.runs_dir, {})
    run.manifest["stages"]["candidates"] = {
        "source_knobs": {name: tuning.describe(value) for name, value in first_knobs.items()},
        "tuning": first,
    }
    run.promote(settings.runs_dir)

    # One more night: 1% more lines, the window a day later: the promoted run's knobs, untuned.
    night = pd.concat([lines, lines.tail(len(lines) // 100)], ignore_index=True)
    knobs, record = stages._source_knobs(
        settings, night, label_start + pd.Timedelta(days=1), tmp_path / "new"
    )
    assert record == {"tuned": False, "tuned_on": first["tuned_on"], "reused_from": run.run_id}
    assert knobs == first_knobs
    # The data moved (10% more lines), the window is past retune_max_days, or it went back in time
    # (another cut): tuned again.
    moved = pd.concat([lines, lines.tail(len(lines) // 10)], ignore_index=True)
    for later, at in (
        (moved, label_start),
        (lines, label_start + pd.Timedelta(days=8)),
        (lines, label_start - pd.Timedelta(days=1)),
    ):
        assert stages._source_knobs(settings, later, at, tmp_path / "new")[1]["tuned"]
    # A stage rerun in the promoted run's own folder tunes again; so does retune_max_days = 0.
    assert stages._source_knobs(settings, night, label_start, run.root)[1]["tuned"]
    assert stages._source_knobs(
        settings.model_copy(update={"retune_max_days": 0}), night, label_start, tmp_path / "new"
    )[1]["tuned"]
