"""Aisle's own scores on the protocol's split, read from a scoring run folder (or an ablation variant's,
scoring/evaluation/ablation.py): the learned ranker, the two-tower retrieval of the folder's encoder, and
the recall of each candidate source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retrieval import candidates as cand
from scoring.evaluation.protocol import Split


def aisle_scores(run_dir: Path, split: Split) -> np.ndarray:
    """The learned ranker's scores for every candidate; items that were no candidate stay unscored."""
    ranked = pd.read_parquet(run_dir / "ranked.parquet")
    return _dense(ranked, "score", split)


def two_tower_scores(run_dir: Path, split: Split) -> np.ndarray:
    """Embedding-only ranking of the folder's encoder (the run's: fine-tuned; the zero-shot variant's: the
    base model): user history text vs item text."""
    users = pd.read_parquet(run_dir / "users.parquet")
    user_vectors = np.load(run_dir / "users_embeddings.npy")
    items = pd.read_parquet(run_dir / "items.parquet")
    item_vectors = np.load(run_dir / "item_embeddings.npy")
    return _similarity(users, user_vectors, items, item_vectors, split)


def _similarity(users, user_vectors, items, item_vectors, split: Split) -> np.ndarray:
    scores = np.full((len(split.users), len(split.items)), -np.inf, dtype=np.float32)
    urows = pd.Index(users["user_id"]).get_indexer(split.users)
    icols = split.position(items["item_id"])
    known_items = icols >= 0
    sims = user_vectors[np.maximum(urows, 0)] @ item_vectors[known_items].T
    sims[urows < 0] = -np.inf
    scores[:, icols[known_items]] = sims
    return scores


def _dense(frame: pd.DataFrame, column: str, split: Split) -> np.ndarray:
    scores = np.full((len(split.users), len(split.items)), -np.inf, dtype=np.float32)
    rows = pd.Index(split.users).get_indexer(frame["user_id"])
    cols = split.position(frame["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    scores[rows[keep], cols[keep]] = frame[column].to_numpy()[keep]
    return scores


def candidate_recall(run_dir: Path, split: Split) -> dict[str, float]:
    """Share of each evaluated user's test items found by each candidate source, and by all merged."""
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    candidates = candidates[candidates["user_id"].isin(set(split.users))]
    out = {}
    for source in (*cand.SOURCES, "merged"):
        chosen = candidates if source == "merged" else candidates[candidates[source] > 0]
        positions = split.position(chosen["item_id"])
        found = pd.Series(positions).groupby(chosen["user_id"].to_numpy()).agg(lambda p: set(p[p >= 0]))
        recalls = [
            len(t & found.get(u, set())) / len(t) for u, t in zip(split.users, split.truth, strict=True) if t
        ]
        out[source] = round(float(np.mean(recalls)), 4)
    out["merged_candidates_per_user"] = round(len(candidates) / max(1, candidates["user_id"].nunique()), 1)
    return out
