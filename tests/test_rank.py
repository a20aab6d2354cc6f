import numpy as np
import pandas as pd

from scoring import rank

AS_OF = pd.Timestamp("2026-02-01")


def _candidates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2"],
            "item_id": ["bought", "similar", "far", "x"],
            "embedding": [0.2, 0.9, 0.1, 0.5],
            "co_purchase": [0.0, 0.5, 0.0, 0.0],
            "times_bought": [4, np.nan, np.nan, np.nan],
            "last_bought_at": [AS_OF.timestamp() - 86400, np.nan, np.nan, np.nan],
            "units_30d": [10, 50, 0, 5],
            "source": ["repeat", "embedding", "popular", "embedding"],
        }
    )


def test_blend_prefers_recent_repeats_and_similar_items_over_unrelated_ones() -> None:
    frame = _candidates()
    frame["score"] = rank.score(frame, AS_OF)
    scores = frame.set_index("item_id")["score"]
    assert scores["bought"] > scores["far"]
    assert scores["similar"] > scores["far"]


def test_top_n_ranks_per_user_from_one() -> None:
    frame = _candidates()
    frame["score"] = rank.score(frame, AS_OF)
    top = rank.top_n(frame, n=2)
    assert list(top.columns) == ["user_id", "item_id", "rank", "score", "source"]
    assert top.groupby("user_id")["rank"].apply(list).to_dict() == {"u1": [1, 2], "u2": [1]}
    u1 = top[top["user_id"] == "u1"]
    assert u1["score"].is_monotonic_decreasing and "far" not in set(u1["item_id"])
