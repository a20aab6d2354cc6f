"""A short reason a shopper can read for each recommendation, drawn from its features.

The first that holds, in this order (the most personal and the easiest to check first):

1. the user bought it before (`times_bought` > 0): "You bought this 3 times, last 12 days ago";
2. co-purchase: the user's past item most associated with it (the anchor: the highest cosine of their
   buyers, which does not favour best-sellers as a raw count would), when at least `min_co_buyers`
   shoppers bought both and more did than chance alone predicts (lift above 1; one shared shopper, or
   two best-sellers that share buyers only because everyone buys them, are not "often bought with"):
   "Often bought with <title>, which you bought";
3. popularity, when the popular source proposed it and no personal source did: "Popular this month"
   (the popular source's window: "this week", "this month" or "in the last N days");
4. the user's past item closest to it in the run's item embeddings (the fine-tuned model's space, the one
   the embedding source searches): "Similar to <title>, which you bought", or for an item nobody bought
   yet (a new listing, which only its text can place) "New, like <title>, which you bought";
5. a user with no purchase before the scoring time: the popularity text.

A reason names only what the user bought before the scoring time, from the same purchases the candidates
came from. Anchors are found per user with small products (the user's history x the user's listed
items): Online Retail's 3.3k users with 40 items each took 38 s on two cores busy with other jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval.candidates import SOURCES, user_item_matrix

# Sources that propose an item for what the user did, not for what everyone bought.
PERSONAL_SOURCES = tuple(s for s in SOURCES if s != "popular")


@dataclass(frozen=True)
class Evidence:
    """What reasons are drawn from, as of the run's scoring time."""

    purchases: pd.DataFrame  # user_id, item_id: every purchase line before the scoring time
    item_ids: np.ndarray  # the run's items, row i of `vectors` belongs to item_ids[i]
    vectors: np.ndarray  # the run's L2-normalised item embeddings
    titles: dict[str, str]  # item_id -> title, for display


def popular_text(days: int) -> str:
    """How the popular source's window reads to a shopper."""
    named = {7: "this week", 30: "this month", 31: "this month", 365: "this year"}
    return f"Popular {named.get(days, f'in the last {days} days')}"


def _ago(days: float) -> str:
    whole = int(days)
    return "today" if whole <= 0 else "yesterday" if whole == 1 else f"{whole} days ago"


def bought_text(times: int, days: float) -> str:
    """The repeat reason, e.g. 'You bought this 3 times, last 12 days ago' (without the time when the
    last purchase's date is unknown)."""
    count = {1: "once", 2: "twice"}.get(times, f"{times} times")
    if np.isnan(days):
        return f"You bought this {count}"
    if times == 1:
        return f"You bought this once, {_ago(days)}"
    return f"You bought this {count}, {'last' if days >= 2 else 'most recently'} {_ago(days)}"


def _anchors(
    users: np.ndarray, items: np.ndarray, evidence: Evidence, min_co_buyers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per (user, item) row: the co-purchase anchor (None when fewer than `min_co_buyers` shoppers bought
    both) and the embedding anchor (None for a user without history)."""
    buyers = np.unique(evidence.purchases["user_id"].to_numpy())
    bought = user_item_matrix(evidence.purchases, buyers, evidence.item_ids)
    # Shoppers who bought both of two items, for the user's items x the listed items only: a product of
    # their buyer columns. The whole items x items matrix is half dense on Online Retail and slow to slice.
    by_item = bought.tocsc()
    buyers_of = np.maximum(np.asarray(bought.sum(axis=0)).ravel(), 1.0)
    column = pd.Index(evidence.item_ids).get_indexer(items)
    user_row = pd.Index(buyers).get_indexer(users)
    co_anchor = np.full(len(users), None, dtype=object)
    near_anchor = np.full(len(users), None, dtype=object)
    order = np.argsort(user_row, kind="stable")
    starts = np.flatnonzero(np.r_[True, user_row[order][1:] != user_row[order][:-1]])
    for rows in np.split(order, starts[1:]):
        u = user_row[rows[0]]
        if u < 0:
            continue
        history = bought.indices[bought.indptr[u] : bought.indptr[u + 1]]
        known = rows[column[rows] >= 0]
        if not len(history) or not len(known):
            continue
        listed = column[known]
        same = listed[:, None] == history[None, :]
        together = (by_item[:, listed].T @ by_item[:, history]).toarray()
        counts = np.where(same, 0, together)
        expected = np.outer(buyers_of[listed], buyers_of[history]) / len(buyers)  # by chance alone
        best = (counts / np.sqrt(expected)).argmax(axis=1)  # cosine, up to a factor of the user's row
        shared = counts[np.arange(len(known)), best]
        strong = (shared >= min_co_buyers) & (shared > expected[np.arange(len(known)), best])
        co_anchor[known[strong]] = evidence.item_ids[history[best[strong]]]
        closeness = np.where(same, -np.inf, evidence.vectors[listed] @ evidence.vectors[history].T)
        nearest = closeness.argmax(axis=1)
        found = np.isfinite(closeness[np.arange(len(known)), nearest])
        near_anchor[known[found]] = evidence.item_ids[history[nearest[found]]]
    return co_anchor, near_anchor


def reasons(recs: pd.DataFrame, evidence: Evidence, popular_days: int, min_co_buyers: int) -> pd.Series:
    """One reason per row of `recs` (user_id, item_id, times_bought, last_bought_days and each candidate
    source's score column), aligned with its index."""
    times = recs["times_bought"].fillna(0).to_numpy(dtype=np.int64)
    days = recs["last_bought_days"].to_numpy(dtype=float)
    text = np.full(len(recs), popular_text(popular_days), dtype=object)
    repeat = times > 0
    text[repeat] = [bought_text(t, d) for t, d in zip(times[repeat], days[repeat], strict=True)]
    rest = np.flatnonzero(~repeat)
    co_anchor, near_anchor = _anchors(
        recs["user_id"].to_numpy()[rest], recs["item_id"].to_numpy()[rest], evidence, min_co_buyers
    )
    personal = recs[list(PERSONAL_SOURCES)].to_numpy()[rest].max(axis=1) > 0
    popular_only = (recs["popular"].to_numpy()[rest] > 0) & ~personal
    title = evidence.titles
    sold = set(evidence.purchases["item_id"])
    items = recs["item_id"].to_numpy()
    for i, row in enumerate(rest):
        if co_anchor[i] is not None:
            text[row] = f"Often bought with {title.get(co_anchor[i], co_anchor[i])}, which you bought"
        elif near_anchor[i] is not None and not popular_only[i]:
            like = "Similar to" if items[row] in sold else "New, like"
            text[row] = f"{like} {title.get(near_anchor[i], near_anchor[i])}, which you bought"
    return pd.Series(text, index=recs.index, name="reason")


def kinds(reason: pd.Series) -> dict[str, int]:
    """How many reasons of each kind (their first words), for the run's manifest."""
    kind = reason.str.extract(r"^(You bought|Often bought with|Similar to|New, like|Popular)", expand=False)
    return {str(k): int(n) for k, n in kind.fillna("other").value_counts().sort_index().items()}
