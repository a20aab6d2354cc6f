"""The offline protocol: a shop's purchases split at a cut, every method scored on the same users, items
and truth, each metric with its bootstrap interval.

Online Retail's purchases are read from the raw file, independently of Aisle's own cleaning (lines with
Quantity > 0, UnitPrice > 0, a CustomerID, a non-'C' invoice and a product stock code); the shops and their
cuts are in scoring/evaluation/shops.py. The train window is before the cut and the test window from it on,
to a test end or the end of the data; the evaluated users have a purchase on each side; the truth is the
set of distinct items a user bought in the test window. The catalogue at the cut holds every item bought
in either window, with its title: an item first sold in the test window is a new item, which a method can
reach only from its title (every method is told the same items exist). Per user: recall, NDCG (binary
gain), precision, F1, average precision and hit rate at K, in three views (VIEWS): over all items, over
novel items (the user's past items removed from the truth and from the list) and over new items (only
new items in the truth and in the list); per list: catalogue coverage, intra-list diversity by category
and novelty (mean popularity rank). Definitions: docs/protocols.md.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from retrieval import candidates as cand
from scoring.evaluation import metrics

K = 20
TARGET_RATIO = 1.10  # Aisle's NDCG@K over the best in-run peer's, all items and novel items
PRODUCT_CODE = "^[0-9]{5}[A-Za-z]*$"
USER_METRICS = {  # name in the report -> per-user metric at k
    "recall": metrics.recall_at_k,
    "ndcg": metrics.ndcg_at_k,
    "precision": metrics.precision_at_k,
    "f1": metrics.f1_at_k,
    "map": metrics.average_precision_at_k,
    "hit_rate": metrics.hit_ratio_at_k,
}
View = Literal["all", "novel", "new"]
VIEWS: dict[View, str] = {"all": "", "novel": "_novel", "new": "_new"}  # view -> metric name suffix


@dataclass
class Split:
    """The protocol's split: who is evaluated, on which items, against which truth."""

    train: pd.DataFrame  # user_id, item_id, ordered_at, title (all train users)
    users: np.ndarray  # evaluated users, sorted
    items: np.ndarray  # the item universe: every product bought in either window, sorted
    truth: list[set[int]]  # per evaluated user, positions of items bought in the test window
    past: list[set[int]]  # per evaluated user, positions of items bought in the train window
    cut: pd.Timestamp  # the first instant of the test window
    titles: np.ndarray  # per item, its most frequent title in the train window, else in the test window
    # ('' for every item when the purchases carry no title: the pipeline's own tuning windows)
    new: set[int]  # positions of the items first sold in the test window

    def position(self, item_ids: pd.Series) -> np.ndarray:
        return pd.Index(self.items).get_indexer(item_ids)

    @cached_property
    def popularity_ranks(self) -> np.ndarray:
        """Each item's popularity rank by distinct train buyers (1 = most bought; ties share the mean)."""
        buyers = self.train.groupby("item_id")["user_id"].nunique()
        return metrics.popularity_ranks(buyers.reindex(self.items).fillna(0).to_numpy())


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


def split(purchases: pd.DataFrame, cut: str, test_end: str | None = None) -> Split:
    """Train before the cut, test from it on until `test_end` (excluded; None: to the end of the data);
    users with a purchase on each side. Purchases at or after `test_end` are left out altogether, items
    included."""
    if test_end is not None:
        purchases = purchases[purchases["ordered_at"] < pd.Timestamp(test_end)]
    cut_ts = pd.Timestamp(cut)
    train = purchases[purchases["ordered_at"] < cut_ts]
    test = purchases[purchases["ordered_at"] >= cut_ts]
    users = np.array(sorted(set(train["user_id"]) & set(test["user_id"])))
    items = np.array(sorted(set(purchases["item_id"])))
    index = pd.Index(items)
    sold_before = set(train["item_id"])

    def sets(frame: pd.DataFrame) -> list[set[int]]:
        frame = frame[frame["user_id"].isin(set(users))]
        positions = index.get_indexer(frame["item_id"])
        grouped = pd.Series(positions).groupby(frame["user_id"].to_numpy()).agg(lambda p: set(p[p >= 0]))
        return [grouped.get(u, set()) for u in users]

    return Split(
        train=train,
        users=users,
        items=items,
        truth=sets(test),
        past=sets(train),
        cut=cut_ts,
        titles=_titles(train, test, items),
        new={i for i, item in enumerate(items) if item not in sold_before},
    )


def _titles(train: pd.DataFrame, test: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    """Each item's most frequent title in the train window; a new item's, in the test window (its listing,
    which the catalogue at the cut shows)."""
    if "title" not in train:
        return np.full(len(items), "", dtype=object)

    def most_frequent(frame: pd.DataFrame) -> pd.Series:
        counts = frame.groupby(["item_id", "title"]).size().reset_index(name="n")
        counts = counts.sort_values(["item_id", "n", "title"], ascending=[True, False, True])
        return counts.drop_duplicates("item_id").set_index("item_id")["title"]

    titles = most_frequent(train).combine_first(most_frequent(test))
    return titles.reindex(items).fillna("").to_numpy(dtype=object)


def user_item_matrix(split: Split, users: np.ndarray, binary: bool = True) -> sp.csr_matrix:
    """The train window's users x items matrix, over the split's item universe."""
    return cand.user_item_matrix(split.train, users, split.items, binary=binary)


def item_categories(split: Split, items: pd.DataFrame) -> dict[int, Hashable]:
    """Item position -> category, from a frame with item_id and category (the run's ranked.parquet).
    Items the frame has no category for are left out: the diversity metric then treats each as its own
    category."""
    known = items.dropna(subset=["category"]).drop_duplicates("item_id")
    positions = split.position(known["item_id"])
    return {int(p): c for p, c in zip(positions, known["category"], strict=True) if p >= 0}


def list_scores(lists: pd.DataFrame, split: Split) -> np.ndarray:
    """A (users x items) score matrix that reproduces fixed lists (user_id, item_id, rank; 1 = first):
    listed items score -rank, every other item stays unscored (-inf)."""
    scores = np.full((len(split.users), len(split.items)), -np.inf)
    rows = pd.Index(split.users).get_indexer(lists["user_id"])
    cols = split.position(lists["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    scores[rows[keep], cols[keep]] = -lists["rank"].to_numpy(dtype=float)[keep]
    return scores


def user_lists(
    scores: np.ndarray, split: Split, view: View, k: int = K
) -> tuple[list[np.ndarray], list[set[int]]]:
    """Each evaluated user's top k (item positions, best first) and truth, from a (users x items) score
    matrix (-inf = unscored), in one of VIEWS: `all` as it is; `novel` without the user's past items, in
    the truth and the list; `new` with only new items (split.new), in the truth and the list. In the last
    two, users left with no truth are left out."""
    lists, truths = [], []
    hidden = np.ones(len(split.items), dtype=bool)
    hidden[list(split.new)] = False  # view `new` hides every item but the new ones
    for row, truth, past in zip(scores, split.truth, split.past, strict=True):
        if view == "novel":
            truth = truth - past
            row = row.copy()
            row[list(past)] = -np.inf
        elif view == "new":
            truth = truth & split.new
            row = np.where(hidden, -np.inf, row)
        if view != "all" and not truth:
            continue
        lists.append(metrics.top_k(row, k))
        truths.append(truth)
    return lists, truths


def per_user_metrics(
    scores: np.ndarray, split: Split, view: View, k: int = K, names: Iterable[str] = tuple(USER_METRICS)
) -> dict[str, np.ndarray]:
    """The metrics `names` (of USER_METRICS, every one by default) per evaluated user, in one of VIEWS
    (see `user_lists`)."""
    lists, truths = user_lists(scores, split, view, k)
    return {
        name: np.array(
            [USER_METRICS[name](truth, top, k) for top, truth in zip(lists, truths, strict=True)], dtype=float
        )
        for name in names
    }


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 1000) -> dict[str, float]:
    """The mean and its 95% percentile-bootstrap interval (n resamples of the users); users without a
    value (nan: a list too short to have pairs) are left out."""
    values = values[~np.isnan(values)]
    if not len(values):
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return {
        "value": round(float(values.mean()), 4),
        "ci_low": round(float(np.quantile(means, 0.025)), 4),
        "ci_high": round(float(np.quantile(means, 0.975)), 4),
    }


def score_table(
    scores: np.ndarray, split: Split, k: int = K, categories: Mapping[int, Hashable] | None = None
) -> dict[str, dict[str, float] | float | int]:
    """One method's row of the report: each per-user metric in each of VIEWS, with its interval; the
    lists' catalogue coverage, intra-list diversity by `categories` (item position -> category; an item
    without one is its own category) and novelty (mean popularity rank); and how many
    users each covers. The list-level metrics describe the lists over all items, those a shopper sees."""
    table: dict[str, dict[str, float] | float | int] = {}
    for view, suffix in VIEWS.items():
        per_user = per_user_metrics(scores, split, view, k)
        table |= {f"{name}@{k}{suffix}": bootstrap(values) for name, values in per_user.items()}
        table[f"users{suffix}"] = len(per_user["recall"])
    lists, _ = user_lists(scores, split, "all", k)
    ranks = split.popularity_ranks
    table[f"coverage@{k}"] = round(metrics.catalogue_coverage(lists, len(split.items)), 4)
    table[f"diversity@{k}"] = bootstrap(
        np.array([metrics.intra_list_diversity(top, categories or {}) for top in lists])
    )
    table[f"novelty@{k}"] = bootstrap(np.array([metrics.novelty(top, ranks) for top in lists]))
    return table
