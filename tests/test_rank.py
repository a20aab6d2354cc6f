import numpy as np
import pandas as pd
import pytest

from scoring.ranking import rank, select
from scoring.settings import Settings
from scoring.training.holdout import held_out


def _synthetic(n_users: int = 60, per_user: int = 30, seed: int = 0) -> pd.DataFrame:
    """Candidates where buying depends on the repeat score and on co-purchase, plus noise features."""
    rng = np.random.default_rng(seed)
    rows = n_users * per_user
    frame = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{i}" for i in range(n_users)], per_user),
            "item_id": np.tile([f"i{j}" for j in range(per_user)], n_users),
        }
    )
    for column in rank.FEATURES:
        frame[column] = rng.random(rows)
    signal = 2.0 * frame["repeat"] + frame["co_purchase"] + 0.3 * rng.random(rows)
    frame["bought"] = (signal > np.quantile(signal, 0.9)).astype(np.int8)
    frame["source"] = "embedding"
    return frame


def test_labels_mark_candidates_bought_in_the_window() -> None:
    candidates = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"]})
    window = pd.DataFrame({"user_id": ["u1", "u3"], "item_id": ["b", "a"]})
    assert rank.labels(candidates, window).tolist() == [0, 1, 0]


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_learned_ranker_puts_what_gets_bought_first_and_reports_importances(objective: str) -> None:
    train, test = _synthetic(seed=1), _synthetic(seed=2)
    ranker = rank.Ranker(objective=objective, seed=3).fit(train, train["bought"].to_numpy())
    test["score"] = ranker.predict(test)
    top = select.top_lists(test, 3, Settings())
    hits = top.merge(test[["user_id", "item_id", "bought"]])["bought"].mean()
    assert hits > 0.6  # a random top 3 would hit about 0.1
    importances = ranker.importances()
    assert set(importances) == set(rank.FEATURES)
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(importances)[0] in {"repeat", "co_purchase"}
    assert ranker.stats["all"]["positives"] == int(train["bought"].sum())


def test_a_split_ranker_learns_repeats_and_new_items_apart_and_survives_a_save(tmp_path) -> None:
    """Where bought-before items follow one signal and new items another, one model per segment learns
    both; the saved pair loads back and scores the same."""
    train, test = _synthetic(seed=1), _synthetic(seed=2)
    for frame in (train, test):
        bought_before = np.arange(len(frame)) % 3 == 0
        frame["repeat"] = np.where(bought_before, frame["repeat"] + 0.01, 0.0)
        signal = np.where(bought_before, frame["tifu_score"], frame["ease_score"])
        frame["bought"] = (signal > 0.8).astype(np.int8)
    ranker = rank.Ranker(seed=3, split_repeat=True).fit(train, train["bought"].to_numpy())
    assert set(ranker.models) == {"repeat", "new"}
    assert ranker.stats["repeat"]["positives"] + ranker.stats["new"]["positives"] == train["bought"].sum()
    test["score"] = ranker.predict(test)
    for name in rank.SEGMENTS:
        part = test[rank.segment(test) == name]
        assert part.groupby("bought")["score"].mean().diff().iloc[-1] > 0.3
    ranker.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranker_new.txt", "ranker_repeat.txt"]
    loaded = rank.Ranker.load(tmp_path)
    np.testing.assert_allclose(loaded.predict(test), test["score"])
    rank.Ranker(seed=3).fit(train, train["bought"].to_numpy()).save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ranker.txt"]


def test_the_holdout_is_a_stable_share_of_users() -> None:
    users = pd.Series([f"u{i}" for i in range(2000)]).repeat(3)
    held = held_out(users, 0.2)
    per_user = pd.Series(held).groupby(users.to_numpy()).agg(["min", "max"])
    assert (per_user["min"] == per_user["max"]).all()  # a user is held out whole
    assert 0.17 < per_user["min"].mean() < 0.23
    assert (held_out(users.iloc[::-1], 0.2)[::-1] == held).all()  # order does not matter


def test_holdout_ndcg_counts_purchases_never_proposed_as_misses() -> None:
    holdout = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "c"], "score": [0.9, 0.1, 0.5]}
    )
    truth = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "z"]})
    assert rank.holdout_ndcg(holdout, truth, "score", k=2) == pytest.approx(0.5)  # u1 perfect, u2 missed


def test_ranker_refuses_a_window_without_purchases() -> None:
    frame = _synthetic()
    with pytest.raises(ValueError, match="label window"):
        rank.Ranker().fit(frame, np.zeros(len(frame), dtype=np.int8))


def test_the_rankers_rounds_are_chosen_on_a_validation_share_of_its_users() -> None:
    """Where buying follows the features, boosting goes on; where it is noise, the validation users stop it
    within a few rounds (the noise would otherwise be learned for all 1,000); with early stopping off,
    every round is trained."""
    signal = _synthetic(n_users=200, seed=1)
    noise = signal.assign(bought=np.random.default_rng(4).permutation(signal["bought"].to_numpy()))
    fitted = {
        name: rank.Ranker(seed=3).fit(frame, frame["bought"].to_numpy()).stats["all"]["rounds"]
        for name, frame in (("signal", signal), ("noise", noise))
    }
    assert fitted["noise"] < 30 < fitted["signal"] < 1000, fitted
    unchosen = rank.Ranker(seed=3, rounds=40, early_stopping=0).fit(noise, noise["bought"].to_numpy())
    assert unchosen.stats["all"]["rounds"] == 40 and unchosen.models["all"].num_trees() == 40
