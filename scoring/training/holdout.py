"""Stable held-out splits: the same keys are held out on every night, in every process.

A model in production must never have trained on what tonight's figures hold out, or comparing tonight's
model with it on those figures favours it. So a key (a user, a query) is held out by where its sha256
falls, not by a random draw: it is held out tonight and was held out last night, and a larger share
holds out a superset. The ranker's holdout users and fine-tuning's held-out pairs both come from here,
so a user the ranker is judged on is also one whose histories the encoder never trained on.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def held_out(keys: pd.Series, share: float) -> np.ndarray:
    """True for the rows whose key is in the stable `share` of keys chosen by their sha256."""

    def bucket(key: str) -> float:
        return int(hashlib.sha256(str(key).encode()).hexdigest()[:8], 16) / 0x1_0000_0000

    unique = pd.Series(keys.unique())
    chosen = set(unique[unique.map(bucket) < share])
    return keys.isin(chosen).to_numpy()
