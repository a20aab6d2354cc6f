"""The offline protocol on the real UCI Online Retail data, computed from the raw file, independently of
Aisle's own cleaning.

Purchases are lines with Quantity > 0, UnitPrice > 0, a CustomerID, a non-'C' invoice and a product stock
code; the train window is before 2011-09-01 and the test window from it on; the evaluated users have a
purchase on each side; the truth is the set of distinct items a user bought in the test window. Every
method is scored on the same users and items: Recall@K and NDCG@K (binary gain) over all items, and over
novel items (the user's past items removed from the truth and from the list), with bootstrap 95%
intervals. Aisle runs its whole pipeline on the data before the cut, in the evaluation profile of the
settings (`evaluation_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from retrieval import candidates as cand
from scoring.evaluation import metrics
from scoring.settings import SHARED_ONLINE_RETAIL, Settings

CUT = "2011-09-01"
K = 20
PRODUCT_CODE = "^[0-9]{5}[A-Za-z]*$"


@dataclass
class Split:
    """The protocol's split: who is evaluated, on which items, against which truth."""

    train: pd.DataFrame  # user_id, item_id, ordered_at, title (all train users)
    users: np.ndarray  # evaluated users, sorted
    items: np.ndarray  # the item universe: every product bought in either window, sorted
    truth: list[set[int]]  # per evaluated user, positions of items bought in the test window
    past: list[set[int]]  # per evaluated user, positions of items bought in the train window

    def position(self, item_ids: pd.Series) -> np.ndarray:
        return pd.Index(self.items).get_indexer(item_ids)


def evaluation_settings(base: Settings) -> Settings:
    """The workspace and profile `aisle evaluate` runs the pipeline in: Online Retail before the cut, in
    data/evaluation, with the evaluation profile's fine-tuning budget and label window (Online Retail needs
    more steps than the demo shop, and a label window as long as the test window)."""
    return base.model_copy(
        update={
            "source": "online_retail",
            "raw_path": base.raw_path or SHARED_ONLINE_RETAIL,
            "as_of": CUT,
            "data_dir": base.data_dir / "evaluation",
            "finetune_steps": base.evaluation_finetune_steps,
            "label_window_days": base.evaluation_label_window_days,
        }
    )


def protocol_purchases(path: Path) -> pd.DataFrame:
    """The protocol's purchase lines, read in place from the raw file."""
    return duckdb.sql(
        f"""
        select
            cast(cast(cast(CustomerID as double) as bigint) as varchar) as user_id,
            upper(trim(StockCode)) as item_id,
            cast(InvoiceDate as timestamp) as ordered_at,
            trim(Description) as title
        from read_csv('{path}', header = true, all_varchar = true)
        where cast(Quantity as integer) > 0
          and cast(UnitPrice as double) > 0
          and CustomerID is not null
          and not starts_with(InvoiceNo, 'C')
          and regexp_matches(trim(StockCode), '{PRODUCT_CODE}')
        """
    ).df()


def split(purchases: pd.DataFrame, cut: str = CUT) -> Split:
    """Train before the cut, test from it on; users with a purchase on each side."""
    cut_ts = pd.Timestamp(cut)
    train = purchases[purchases["ordered_at"] < cut_ts]
    test = purchases[purchases["ordered_at"] >= cut_ts]
    users = np.array(sorted(set(train["user_id"]) & set(test["user_id"])))
    items = np.array(sorted(set(purchases["item_id"])))
    index = pd.Index(items)

    def sets(frame: pd.DataFrame) -> list[set[int]]:
        frame = frame[frame["user_id"].isin(set(users))]
        positions = index.get_indexer(frame["item_id"])
        grouped = pd.Series(positions).groupby(frame["user_id"].to_numpy()).agg(lambda p: set(p[p >= 0]))
        return [grouped.get(u, set()) for u in users]

    return Split(train=train, users=users, items=items, truth=sets(test), past=sets(train))


def user_item_matrix(split: Split, users: np.ndarray, binary: bool = True) -> sp.csr_matrix:
    """The train window's users x items matrix, over the split's item universe."""
    return cand.user_item_matrix(split.train, users, split.items, binary=binary)


def per_user_metrics(
    scores: np.ndarray, split: Split, novel: bool, k: int = K
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@k and NDCG@k per evaluated user from a (users x items) score matrix (-inf = unscored).

    With `novel`, the user's past items leave the truth and the list, and users left with no truth are
    left out."""
    recalls, ndcgs = [], []
    for row, truth, past in zip(scores, split.truth, split.past, strict=True):
        if novel:
            truth = truth - past
            if not truth:
                continue
            row = row.copy()
            row[list(past)] = -np.inf
        top = metrics.top_k(row, k)
        recalls.append(metrics.recall_at_k(truth, top, k))
        ndcgs.append(metrics.ndcg_at_k(truth, top, k))
    return np.array(recalls), np.array(ndcgs)


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 1000) -> dict[str, float]:
    """The mean and its 95% percentile-bootstrap interval (n resamples of the users)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return {
        "value": round(float(values.mean()), 4),
        "ci_low": round(float(np.quantile(means, 0.025)), 4),
        "ci_high": round(float(np.quantile(means, 0.975)), 4),
    }


def score_table(scores: np.ndarray, split: Split, k: int = K) -> dict[str, dict[str, float]]:
    """One method's row of the report: each metric with its interval, and how many users it covers."""
    recall, ndcg = per_user_metrics(scores, split, novel=False, k=k)
    recall_n, ndcg_n = per_user_metrics(scores, split, novel=True, k=k)
    return {
        f"recall@{k}": bootstrap(recall),
        f"ndcg@{k}": bootstrap(ndcg),
        f"recall@{k}_novel": bootstrap(recall_n),
        f"ndcg@{k}_novel": bootstrap(ndcg_n),
        "users": int(len(recall)),
        "users_novel": int(len(recall_n)),
    }
