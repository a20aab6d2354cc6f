import numpy as np
import pandas as pd
import pytest

from scoring.ranking import rank


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
    top = rank.top_n(test, n=3)
    hits = top.merge(test[["user_id", "item_id", "bought"]])["bought"].mean()
    assert hits > 0.6  # a random top 3 would hit about 0.1
    importances = ranker.importances()
    assert set(importances) == set(rank.FEATURES)
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    assert list(importances)[0] in {"repeat", "co_purchase"}
    assert ranker.stats["positives"] == int(train["bought"].sum())


def test_ranker_refuses_a_window_without_purchases() -> None:
    frame = _synthetic()
    with pytest.raises(ValueError, match="label window"):
        rank.Ranker().fit(frame, np.zeros(len(frame), dtype=np.int8))


def test_top_n_ranks_per_user_from_one() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2"],
            "item_id": ["a", "b", "c", "x"],
            "score": [0.1, 0.9, 0.5, 0.3],
            "source": ["repeat", "embedding", "popular", "embedding"],
        }
    )
    top = rank.top_n(frame, n=2)
    assert list(top.columns) == ["user_id", "item_id", "rank", "score", "source"]
    assert top[top.user_id == "u1"]["item_id"].tolist() == ["b", "c"]
    assert top.groupby("user_id")["rank"].apply(list).to_dict() == {"u1": [1, 2], "u2": [1]}
