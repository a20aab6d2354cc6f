"""The peers Aisle is measured against, each a (evaluated users x items) score matrix on the protocol's
split, computed from the train window alone: popularity, repurchase then popularity, item-kNN, implicit
ALS, and all-MiniLM-L6-v2 zero-shot (the mean of a user's history against item titles)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval import candidates as cand
from scoring.evaluation.protocol import Split, user_item_matrix


def popularity(split: Split) -> np.ndarray:
    """Distinct buyers of each item in the train window, the same list for everyone."""
    buyers = split.train.groupby("item_id")["user_id"].nunique()
    counts = buyers.reindex(split.items).fillna(0).to_numpy(dtype=float)
    return np.tile(counts, (len(split.users), 1))


def repurchase_then_popularity(split: Split) -> np.ndarray:
    """A user's past items first (most often bought first), then the popular ones."""
    pop = popularity(split)
    counts = user_item_matrix(split, split.users, binary=False).toarray()
    return np.where(counts > 0, 1e6 * counts, 0.0) + pop / (pop.max() + 1)


def item_knn(split: Split) -> np.ndarray:
    """Item-item cosine similarity on binary purchases, summed over a user's past items."""
    everyone = np.array(sorted(split.train["user_id"].unique()))
    similarity = cand.item_similarity(user_item_matrix(split, everyone))
    return np.asarray((user_item_matrix(split, split.users) @ similarity).todense())


def implicit_als(split: Split, factors: int = 128, seed: int = 0) -> np.ndarray:
    """implicit's ALS on purchase counts."""
    everyone = np.array(sorted(split.train["user_id"].unique()))
    user_factors, item_factors = cand.als_factors(
        user_item_matrix(split, everyone, binary=False), factors, seed
    )
    rows = pd.Index(everyone).get_indexer(split.users)
    return user_factors[rows] @ item_factors.T


def item_titles(split: Split) -> list[str]:
    """Each item's most frequent title in the train window ('' for items bought only after the cut)."""
    titles = split.train.groupby("item_id")["title"].agg(lambda t: t.value_counts().index[0])
    return titles.reindex(split.items).fillna("").tolist()


def zero_shot_mean_history(split: Split, model_name: str) -> np.ndarray:
    """The base model, no fine-tuning: a user is the mean of their past items' title vectors."""
    from scoring.training.embed import encode
    from scoring.training.finetune import load_model

    model = load_model(model_name, "cpu", 64)
    vectors = encode(model, item_titles(split), 256, "item titles (zero-shot)")
    mine = user_item_matrix(split, split.users)
    users = np.asarray(mine @ vectors) / np.maximum(np.asarray(mine.sum(axis=1)), 1)
    return users @ vectors.T
