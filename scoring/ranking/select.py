"""Choose what each shopper is shown from the ranked candidates: the top list, optionally diversified,
and the discover list of items the shopper never bought.

Pure functions over a ranked frame (one row per user and candidate: `user_id`, `item_id`, `score`, and
`category` for diversity, `times_bought` for the discover list), so the scoring run's `select` stage and
the offline evaluation's diversity trade-off pick lists the same way.

Diversity (`Settings.diversity`) is off by default: on this data it costs accuracy, and how much is a
shop's choice (the evaluation reports the trade-off).

- `mmr`: maximal marginal relevance (Carbonell & Goldstein, 1998). Greedily, the next item is the one
  maximising (1 - λ) · relevance - λ · (max similarity to the items already listed), where relevance is
  the user's scores scaled to [0, 1], similarity is 1 between items of one category and 0 otherwise,
  and λ is `diversity_lambda` (0 gives the plain ranking; 1 lists one item per category first).
- `category_cap`: at most `category_cap` items of one category, best first. When every remaining
  candidate's category is full, the best of them fill the list, so a user still gets n items (the
  publishing check requires n).

Items without a category are similar to nothing and never capped. Scores are compared at the fixed
precision of retrieval/ordering.py and ties go to the smaller item id, as in the plain ranking, so every
list is deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval import ordering
from scoring.settings import Settings

# Added to a capped item's relevance (in [0, 1]) so that it comes after every item still allowed.
_FULL = -2.0


def _ordered(ranked: pd.DataFrame) -> pd.DataFrame:
    """Each user's candidates best first (retrieval/ordering.py: the score at a fixed precision, ties to
    the smaller item id)."""
    return ordering.ordered(ranked, by="user_id").reset_index(drop=True)


def _with_rank(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.reset_index(drop=True)
    rows.insert(rows.columns.get_loc("item_id") + 1, "rank", rows.groupby("user_id").cumcount() + 1)
    return rows


def _plain(ordered: pd.DataFrame, n: int) -> pd.DataFrame:
    return _with_rank(ordered[ordered.groupby("user_id").cumcount() < n])


def _grid(ordered: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidates as users x positions grids: row numbers in `ordered` (-1 for padding), relevance
    (the user's scores scaled to [0, 1]), and category codes (a code past the last category for none)."""
    users, user_code = np.unique(ordered["user_id"].to_numpy(), return_inverse=True)
    position = ordered.groupby("user_id").cumcount().to_numpy()
    width = int(position.max()) + 1
    row = np.full((len(users), width), -1, dtype=np.int64)
    row[user_code, position] = np.arange(len(ordered))
    score = pd.Series(ordering.score_key(ordered["score"]), index=ordered.index)
    low = score.groupby(ordered["user_id"]).transform("min").to_numpy()
    span = score.groupby(ordered["user_id"]).transform("max").to_numpy() - low
    score = score.to_numpy()
    relevance = np.zeros(row.shape)
    relevance[user_code, position] = np.divide(score - low, span, out=np.ones_like(score), where=span > 0)
    codes, categories = pd.factorize(ordered["category"])
    none = len(categories)
    category = np.full(row.shape, none, dtype=np.int64)
    category[user_code, position] = np.where(codes < 0, none, codes)
    return row, relevance, category, none


def _diversified(ordered: pd.DataFrame, n: int, settings: Settings) -> pd.DataFrame:
    """Greedy selection, all users at once: n steps, each picking every user's best next item."""
    row, relevance, category, none = _grid(ordered)
    users = np.arange(row.shape[0])
    available = row >= 0
    listed = np.zeros((row.shape[0], none + 1), dtype=np.int64)  # items per category in each list so far
    chosen = []
    for _ in range(min(n, row.shape[1])):
        already = listed[users[:, None], category]
        if settings.diversity == "mmr":
            lam = settings.diversity_lambda
            value = (1 - lam) * relevance - lam * (already > 0)
        else:
            value = relevance + _FULL * (already >= settings.category_cap)
        value = np.where(available, value, -np.inf)
        pick = value.argmax(axis=1)
        has = available[users, pick]  # a user with fewer than n candidates runs out
        chosen.append(row[users[has], pick[has]])
        available[users[has], pick[has]] = False
        listed[users[has], category[users[has], pick[has]]] += 1
        listed[:, none] = 0
    picked = np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)
    step = np.concatenate([np.full(len(c), s) for s, c in enumerate(chosen)]) if chosen else picked
    rows = ordered.iloc[picked].assign(_step=step)
    return _with_rank(rows.sort_values(["user_id", "_step"], kind="stable").drop(columns="_step"))


def top_lists(ranked: pd.DataFrame, n: int, settings: Settings) -> pd.DataFrame:
    """The n items shown to each user, with `rank` (1 = first) after `item_id` and every column of
    `ranked` kept; diversified as `settings.diversity` says (needs a `category` column unless 'none')."""
    ordered = _ordered(ranked)
    if settings.diversity == "none" or ordered.empty:
        return _plain(ordered, n)
    return _diversified(ordered, n, settings)


def discover_lists(ranked: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n best items each user never bought (`times_bought` 0 or missing), ranked like `top_lists`;
    empty when n is 0."""
    never = ranked[ranked["times_bought"].fillna(0) == 0] if n > 0 else ranked.iloc[:0]
    return _plain(_ordered(never), n)
