"""A deterministic synthetic e-commerce shop: raw events, items, users and searches, with known defects.

Why it exists: the pipeline (dbt quality rules, feature store, recommender) needs data that looks like a
real gift-and-homeware shop, that holds a learnable personal signal (a recommender that reads a user's
history must beat global popularity), and whose defects are known row by row, so that tests can check
every quarantine and repair exactly. Real exports give none of those guarantees. A second cadence,
"grocery" (shoppers reordering a basket of staples every week or two), shows whether what works on the gift
shop's rhythm carries over to another (Cadence, CADENCES).

The search log (`searches.parquet`) is written by demo_searches from the same simulated sessions, so a
search's clicks, carts and purchases are the shopper's own events.

Every raw column is written as nullable text because raw exports are text: only then can a malformed value
("two", "31/02/2026 25:61") exist at all. The generator is vectorised with numpy (10M events in about a
minute) and deterministic: the same arguments give byte-identical files, with no wall clock involved.

The files and the exact shape of every defect are described in `generate`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scoring.ingest import arrivals, demo_searches
from scoring.ingest.demo_parts import (
    CATEGORIES,
    COLOURS,
    DAY,
    Steps,
    _Catalogue,
    _defect_count,
    _Defects,
    _id_width,
    _ids,
    _integers,
    _materials,
    _normalised,
    _pick_from,
    _product_types,
    _sample_in_groups,
    _timestamps,
    _Users,
)

# --- catalogue vocabulary ----------------------------------------------------------------------------------
# The rest of the catalogue vocabulary; CATEGORIES and COLOURS, which the search log names too, are in
# demo_parts, under the same Title Case rule.
# fmt: off
COLOUR_WEIGHTS = np.array([1.0] * 10 + [0.5] * 3)
ADJECTIVES: tuple[str, ...] = (
    "Vintage", "Rustic", "Classic", "Retro", "Scandi", "Botanical", "Floral", "Striped", "Spotty", "Heart",
    "Star", "Mini", "Large",
)
BRANDS: tuple[str, ...] = (
    "Little Wren", "Bramble Lane", "Paper Moon", "Hearthside", "Nordvik", "Cotton Kite", "Oak and Ivy",
    "Lumen",
)
PHRASES: tuple[str, ...] = (
    "perfect for everyday use", "a lovely gift for friends and family", "designed to brighten any room",
    "made to last", "ideal for cosy evenings at home", "one of our best sellers",
)
COUNTRIES: tuple[tuple[str, float], ...] = (
    ("United Kingdom", 0.82), ("Germany", 0.04), ("France", 0.04), ("Ireland", 0.03), ("Netherlands", 0.02),
    ("Spain", 0.015), ("Belgium", 0.01), ("Switzerland", 0.01), ("Norway", 0.005), ("Portugal", 0.005),
    ("Australia", 0.005),
)
FIRST_NAMES: tuple[str, ...] = (
    "Jane", "John", "Emma", "Oliver", "Amelia", "Harry", "Olivia", "Jack", "Isla", "George", "Ava", "Noah",
    "Mia", "Leo", "Sophie", "Arthur", "Grace", "Oscar", "Lily", "Freddie", "Ella", "Alfie", "Chloe", "Henry",
    "Ruby", "Thomas", "Evie", "James", "Poppy", "William", "Hannah", "Samuel", "Lucy", "Daniel", "Zara",
    "Adam",
)
LAST_NAMES: tuple[str, ...] = (
    "Doe", "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood",
    "Jackson", "Clarke", "Khan", "Lewis", "Hughes", "Edwards", "Turner", "Hill", "Moore", "Cooper", "Ward",
    "Morris", "King",
)
EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.org", "example.net")  # reserved, never deliverable

# --- behaviour knobs ---------------------------------------------------------------------------------------
QUANTITIES = np.array([1, 2, 3, 4, 5, 6, 12, 24])
QUANTITY_WEIGHTS = np.array([0.42, 0.2, 0.1, 0.08, 0.05, 0.08, 0.05, 0.02])
QUANTITY_WORDS = {
    1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 12: "twelve", 24: "two dozen",
}
# fmt: on
EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase", "return")
EVENT_TYPE_TYPOS: tuple[str, ...] = ("veiw", "crat", "purchse", "retrun")
VIEW, CART, PURCHASE, RETURN = range(4)
MEAN_SESSIONS = 12.0  # per user over a whole period, before heavy-tailed activity and late sign-up
COLOUR_BOOST, MATERIAL_BOOST = 4.0, 2.0  # how much a user's favourite colour / material lifts an item
RETURN_RATE = 0.04
WEEK = 7 * DAY
MAX_DEFECT_RATE = 0.1


@dataclass(frozen=True)
class Cadence:
    """How often shoppers come back and what they come back for.

    The gift shop is visited now and then, and a staple is re-bought only when a browsing view happens to
    revisit it. A grocery shop is driven by routine: most shoppers keep a basket of staples and make a
    trip every week or two, reordering most of the basket each time. Evaluating on both tells a
    recommender that merely fits one shop's rhythm from one that reads the shopper's own.
    """

    staple_view_rate: float  # share of browsing views that revisit one of the user's staples
    staple_cart_rate: float  # chance a staple view is carted (other views: 0.22)
    staple_buy_rate: float  # chance a carted staple is bought (other carts: 0.6)
    max_order_lines: int
    basket: tuple[int, int] = (0, 0)  # staples per trip shopper, inclusive range; (0, 0) = no trips
    regular_share: float = 0.0  # share of users who make staple trips
    trip_days: tuple[float, float] = (0.0, 0.0)  # a trip shopper's usual days between trips, drawn uniformly
    trip_jitter: float = 0.0  # relative spread of each gap around the shopper's usual interval
    due_rate: float = 0.0  # chance each basket staple is reordered on a given trip
    trip_browse_p: float = 0.4  # geometric parameter of the extra browsing views on a trip

    @property
    def trips(self) -> bool:
        """Whether shoppers make staple trips (the gift shop draws nothing for them, so its bytes stay)."""
        return self.regular_share > 0


CADENCES: dict[str, Cadence] = {
    "gift": Cadence(staple_view_rate=0.12, staple_cart_rate=0.6, staple_buy_rate=0.9, max_order_lines=6),
    "grocery": Cadence(
        staple_view_rate=0.2,
        staple_cart_rate=0.9,
        staple_buy_rate=0.95,
        max_order_lines=12,
        basket=(3, 8),
        regular_share=0.85,
        trip_days=(6.0, 12.0),
        trip_jitter=0.2,
        due_rate=0.7,
    ),
}
MAX_TRIP_BROWSE = 5


def _build_catalogue(rng: np.random.Generator, n_items: int) -> _Catalogue:
    """Items with Zipf popularity; titles and prices follow product type, colour and material."""
    types = _product_types()
    materials = _materials()
    type_category = np.array([t[0] for t in types])
    # Every category gets at least one item, so any taste can be served.
    others = rng.choice(
        len(CATEGORIES), n_items - len(CATEGORIES), p=_normalised([w for _, w, _ in CATEGORIES])
    )
    category = rng.permutation(np.concatenate([np.arange(len(CATEGORIES)), others]))
    first_type = np.searchsorted(type_category, np.arange(len(CATEGORIES)))
    n_types = np.bincount(type_category, minlength=len(CATEGORIES))
    product_type = first_type[category] + (rng.random(n_items) * n_types[category]).astype(np.int64)
    material_pick = rng.random(n_items)
    material_names = [
        types[t][3][int(u * len(types[t][3]))] for t, u in zip(product_type, material_pick, strict=True)
    ]
    colour = rng.choice(len(COLOURS), n_items, p=_normalised(COLOUR_WEIGHTS))
    adjective = np.where(rng.random(n_items) < 0.5, rng.integers(0, len(ADJECTIVES), n_items), -1)
    brand = rng.integers(0, len(BRANDS), n_items)
    base = np.array([t[2] for t in types])[product_type]
    price_cents = np.maximum(
        45, np.round(base * rng.lognormal(0.0, 0.2, n_items) * 10).astype(np.int64) * 10 - 5
    )
    popularity = 1.0 / (rng.permutation(n_items) + 1.0) ** 0.9
    phrases = rng.integers(0, len(PHRASES), n_items)
    titles, descriptions = [], []
    for i in range(n_items):
        words = [ADJECTIVES[adjective[i]]] if adjective[i] >= 0 else []
        words += [COLOURS[colour[i]], material_names[i], types[product_type[i]][1]]
        titles.append(" ".join(words))
        descriptions.append(f"A {' '.join(words).lower()} from {BRANDS[brand[i]]}, {PHRASES[phrases[i]]}.")
    return _Catalogue(
        category=category,
        colour=colour,
        material=np.array([materials.index(m) for m in material_names], dtype=np.int64),
        consumable=np.array([t[4] for t in types])[product_type],
        price_cents=price_cents,
        popularity=popularity,
        titles=titles,
        descriptions=descriptions,
        brands=[BRANDS[b] for b in brand],
    )


def _sample_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (rows, k) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cumulative[:, -1]
    return np.minimum((cumulative < u[:, None]).sum(axis=1), probabilities.shape[1] - 1)


def _build_users(rng: np.random.Generator, n_users: int, start_s: int, end_s: int, cat: _Catalogue) -> _Users:
    """Users with a sparse category taste, a favourite colour and material, and a few consumable staples."""
    n_cat = len(CATEGORIES)
    base = _normalised([w for _, w, _ in CATEGORIES])
    taste = 0.92 * rng.dirichlet(np.full(n_cat, 0.12), n_users) + 0.08 * base
    material_freq = np.bincount(cat.material, minlength=len(_materials())) + 0.5
    span = end_s - start_s
    signup_s = start_s + (rng.beta(1.0, 1.6, n_users) * (span - DAY)).astype(np.int64)
    country = rng.choice(len(COUNTRIES), n_users, p=_normalised([w for _, w in COUNTRIES]))
    has_consumable = np.bincount(cat.category[cat.consumable], minlength=n_cat) > 0
    staple_category = _sample_rows(rng, np.repeat(taste * has_consumable, 3, axis=0))
    consumable_weight = cat.popularity * cat.consumable
    staples = _sample_in_groups(
        rng, staple_category, lambda c: consumable_weight * (cat.category == c)
    ).reshape(n_users, 3)
    return _Users(
        taste=taste,
        fav_colour=rng.choice(len(COLOURS), n_users, p=_normalised(COLOUR_WEIGHTS)),
        fav_material=rng.choice(len(material_freq), n_users, p=_normalised(material_freq)),
        signup_s=signup_s,
        activity=rng.lognormal(np.log(MEAN_SESSIONS) - 0.6, 1.1, n_users),
        country=country,
        staples=staples,
        n_staples=rng.integers(0, 4, n_users),
    )


def _with_baskets(rng: np.random.Generator, users: _Users, cat: _Catalogue, cadence: Cadence) -> _Users:
    """Give every user a basket of distinct staples (consumables, by taste and popularity), replacing the
    gift shop's three, so trips and staple views reorder the same few items week after week.

    Gumbel top-k draws each basket without replacement in one vectorised pass (users in chunks, so a large
    shop never holds a users x items matrix at once).
    """
    n_users = len(users.signup_s)
    pool = np.flatnonzero(cat.consumable)
    pool = pool if len(pool) else np.arange(len(cat.titles))
    low, high = cadence.basket
    width = min(high, len(pool))
    staples = np.empty((n_users, width), dtype=np.int64)
    log_popularity = np.log(cat.popularity[pool])
    chunk = 4096
    for lo in range(0, n_users, chunk):
        taste = users.taste[lo : lo + chunk][:, cat.category[pool]]
        keys = np.log(taste) + log_popularity + rng.gumbel(size=taste.shape)
        staples[lo : lo + chunk] = pool[np.argsort(-keys, axis=1, kind="stable")[:, :width]]
    n_staples = np.minimum(rng.integers(low, high + 1, n_users), width)
    return dataclasses.replace(users, staples=staples, n_staples=n_staples)


def _staple_trips(
    rng: np.random.Generator, users: _Users, cadence: Cadence, end_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The regular shoppers' trips: (user, start, due), where due[trip, j] says basket staple j is reordered.

    Each regular keeps a usual interval (cadence.trip_days) and each gap varies around it (trip_jitter),
    the first trip falling at a random phase after sign-up. Trips that reorder nothing are dropped.
    """
    n_users = len(users.signup_s)
    regular = np.flatnonzero(rng.random(n_users) < cadence.regular_share)
    interval = rng.uniform(*cadence.trip_days, len(regular)) * DAY
    shortest_gap = 0.5 * cadence.trip_days[0] * DAY
    most = int(np.ceil((end_s - users.signup_s.min(initial=end_s)) / shortest_gap)) + 1
    gaps = interval[:, None] * np.clip(rng.normal(1.0, cadence.trip_jitter, (len(regular), most)), 0.5, 1.5)
    gaps[:, 0] *= rng.random(len(regular))
    at = users.signup_s[regular][:, None] + np.cumsum(gaps, axis=1).astype(np.int64)
    row, col = np.nonzero(at < end_s)
    user, start = regular[row], at[row, col]
    width = users.staples.shape[1]
    due = (rng.random((len(user), width)) < cadence.due_rate) & (
        np.arange(width) < users.n_staples[user][:, None]
    )
    keep = due.any(axis=1)
    return user[keep], start[keep], due[keep]


def _segment_starts(group: np.ndarray) -> np.ndarray:
    """For each row of a group-sorted array, the index of the first row of its group."""
    is_first = np.ones(len(group), dtype=bool)
    is_first[1:] = group[1:] != group[:-1]
    return np.maximum.accumulate(np.where(is_first, np.arange(len(group)), 0))


def _exclusive_segment_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Sum of the earlier values of the same group (groups must be contiguous)."""
    before = np.cumsum(values) - values
    return before - before[_segment_starts(group)]


def _segment_cummax(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum that restarts at each group; groups must be sorted ascending."""
    if len(values) == 0:
        return values
    low = values.min()
    span = int(values.max() - low) + 1
    lifted = (values - low) + group.astype(np.int64) * span
    return np.maximum.accumulate(lifted) - group.astype(np.int64) * span + low


@dataclass(frozen=True)
class _Events:
    """Clean events as numbers (-1 = null), time-sorted; text comes later and only once."""

    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    ts: np.ndarray
    quantity: np.ndarray
    price_cents: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def _simulate_events(
    rng: np.random.Generator, users: _Users, cat: _Catalogue, start_s: int, end_s: int, cadence: Cadence
) -> tuple[_Events, Steps]:
    """Sessions of views, some carts and at most one checkout, laid out without overlapping per user.

    Browsing sessions come at random times; with a trip cadence, the regulars' staple trips follow them
    (the due staples first, then a little browsing). Clean rows can never coincide: a user's sessions never
    overlap, every step inside a session takes at least one second, and lines of one checkout differ by
    item (they share order_id and time, as in real exports). Also returns the kept steps, which drive the
    search log.
    """
    n_users = len(users.signup_s)
    span = end_s - users.signup_s
    n_sessions = rng.poisson(users.activity * span / (end_s - start_s))
    sess_user = np.repeat(np.arange(n_users), n_sessions)
    sess_start = users.signup_s[sess_user] + (rng.random(len(sess_user)) * span[sess_user]).astype(np.int64)
    sess_cat = _sample_rows(rng, users.taste[sess_user])
    n_views = np.minimum(rng.geometric(0.2, len(sess_user)), 25)
    n_browsing = len(sess_user)
    due = np.zeros((0, users.staples.shape[1]), dtype=bool)
    if cadence.trips:
        trip_user, trip_start, due = _staple_trips(rng, users, cadence, end_s)
        extra = np.minimum(rng.geometric(cadence.trip_browse_p, len(trip_user)) - 1, MAX_TRIP_BROWSE)
        sess_user = np.concatenate([sess_user, trip_user])
        sess_start = np.concatenate([sess_start, trip_start])
        sess_cat = np.concatenate([sess_cat, _sample_rows(rng, users.taste[trip_user])])
        n_views = np.concatenate([n_views, due.sum(axis=1) + extra])

    view_sess = np.repeat(np.arange(len(sess_user)), n_views)
    view_user = sess_user[view_sess]
    item, is_staple = _choose_viewed_items(
        rng, users, cat, sess_cat[view_sess], view_user, cadence.staple_view_rate
    )
    if len(due):
        # A trip's first views are its due staples, in basket order (row-major, like the mask below).
        trip = view_sess - n_browsing
        on_list = trip >= 0
        position = np.arange(len(view_sess)) - _segment_starts(view_sess)
        on_list[on_list] = position[on_list] < due.sum(axis=1)[trip[on_list]]
        item[on_list] = users.staples[sess_user[n_browsing:]][due]
        is_staple |= on_list
    n_view = len(view_sess)
    is_cart = rng.random(n_view) < np.where(is_staple, cadence.staple_cart_rate, 0.22)
    is_buy = is_cart & (rng.random(n_view) < np.where(is_staple, cadence.staple_buy_rate, 0.6))
    is_buy = _one_line_per_item(view_sess, item, is_buy, cadence.max_order_lines)
    quantity = rng.choice(QUANTITIES, n_view, p=QUANTITY_WEIGHTS)

    # A step is a view, then its cart if any; the checkout closes the session.
    view_gap = 1 + rng.lognormal(np.log(35.0), 0.9, n_view).astype(np.int64)
    cart_gap = np.where(is_cart, 1 + rng.lognormal(np.log(12.0), 0.7, n_view).astype(np.int64), 0)
    view_off = _exclusive_segment_cumsum(view_gap + cart_gap, view_sess)
    steps_total = np.bincount(view_sess, weights=view_gap + cart_gap, minlength=len(sess_user)).astype(
        np.int64
    )
    has_order = np.bincount(view_sess, weights=is_buy, minlength=len(sess_user)) > 0
    checkout_off = steps_total + 1 + rng.lognormal(np.log(50.0), 0.5, len(sess_user)).astype(np.int64)
    duration = np.where(has_order, checkout_off, steps_total)
    start = _non_overlapping_starts(sess_user, sess_start, duration)
    kept = start + duration < end_s
    weekly = _weekly_prices(rng, cat, (end_s - start_s) // WEEK + 1)
    week = np.minimum((start[view_sess] - start_s) // WEEK, weekly.shape[1] - 1)
    price = weekly[item, week]
    checkout_ts = start + checkout_off
    order_no = np.full(len(sess_user), -1, dtype=np.int64)
    ordered = np.flatnonzero(has_order & kept)
    order_no[ordered[np.argsort(checkout_ts[ordered], kind="stable")]] = np.arange(1, len(ordered) + 1)

    v = kept[view_sess]
    c = v & is_cart
    b = v & is_buy
    returned = b & (rng.random(n_view) < RETURN_RATE)
    return_ts = checkout_ts[view_sess] + rng.integers(DAY, 30 * DAY, n_view)
    returned &= return_ts < end_s
    parts = [
        (v, VIEW, start[view_sess] + view_off, False, False),
        (c, CART, start[view_sess] + view_off + view_gap, True, False),
        (b, PURCHASE, checkout_ts[view_sess], True, True),
        (returned, RETURN, return_ts, True, True),
    ]
    events = _assemble(parts, view_user, item, quantity, price, order_no[view_sess])
    # Seconds between a view and the shopper's previous event: the previous step's cart (or view) in the
    # session, or the end of the shopper's previous session for a session's first view.
    step_gap = np.where(is_cart, cart_gap, view_gap)
    gap_before = np.empty(n_view, dtype=np.int64)
    gap_before[1:] = step_gap[:-1]
    first_step = _segment_starts(view_sess) == np.arange(n_view)
    by_start = np.lexsort((start, sess_user))
    session_gap = np.full(len(sess_user), 3600, dtype=np.int64)
    same_user = sess_user[by_start[1:]] == sess_user[by_start[:-1]]
    previous_end = start[by_start[:-1]] + duration[by_start[:-1]]
    session_gap[by_start[1:]] = np.where(same_user, start[by_start[1:]] - previous_end, 3600)
    gap_before[first_step] = session_gap[view_sess[first_step]]
    steps = Steps(
        user=view_user[v],
        item=item[v],
        session=view_sess[v],
        category=sess_cat[view_sess][v],
        view_ts=(start[view_sess] + view_off)[v],
        cart_ts=np.where(c, start[view_sess] + view_off + view_gap, -1)[v],
        buy_ts=np.where(b, checkout_ts[view_sess], -1)[v],
        gap_before=np.maximum(1, gap_before)[v],
    )
    return events, steps


def _weekly_prices(rng: np.random.Generator, cat: _Catalogue, n_weeks: int) -> np.ndarray:
    """Unit prices per (item, week): mostly the list price, sometimes a promotion or a small rise.

    Prices move between weeks, not between the views of one session, as in a real shop.
    """
    shape = (len(cat.price_cents), n_weeks)
    change = np.where(rng.random(shape) < 0.15, np.clip(rng.normal(-0.03, 0.06, shape), -0.25, 0.1), 0.0)
    return np.maximum(1, np.round(cat.price_cents[:, None] * (1.0 + change)).astype(np.int64))


def _choose_viewed_items(
    rng: np.random.Generator,
    users: _Users,
    cat: _Catalogue,
    view_cat: np.ndarray,
    view_user: np.ndarray,
    staple_view_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Viewed items: popularity x taste (category, colour, material), sometimes a staple being re-bought."""
    n_col, n_mat = len(COLOURS), len(_materials())
    keys = (view_cat * n_col + users.fav_colour[view_user]) * n_mat + users.fav_material[view_user]

    def weights(key: int) -> np.ndarray:
        category, rest = divmod(key, n_col * n_mat)
        colour, material = divmod(rest, n_mat)
        boost = (1 + COLOUR_BOOST * (cat.colour == colour)) * (
            1 + MATERIAL_BOOST * (cat.material == material)
        )
        return cat.popularity * boost * (cat.category == category)

    item = _sample_in_groups(rng, keys, weights)
    n_staples = users.n_staples[view_user]
    is_staple = (n_staples > 0) & (rng.random(len(view_user)) < staple_view_rate)
    pick = (rng.random(len(view_user)) * n_staples).astype(np.int64)
    item = np.where(is_staple, users.staples[view_user, np.minimum(pick, users.staples.shape[1] - 1)], item)
    return item, is_staple


def _one_line_per_item(
    view_sess: np.ndarray, item: np.ndarray, is_buy: np.ndarray, max_lines: int
) -> np.ndarray:
    """Keep the first purchase of each item in a session and at most max_lines lines per order."""
    rows = np.flatnonzero(is_buy)
    order = np.lexsort((rows, item[rows], view_sess[rows]))
    ranked = rows[order]
    first = np.ones(len(ranked), dtype=bool)
    first[1:] = (view_sess[ranked[1:]] != view_sess[ranked[:-1]]) | (item[ranked[1:]] != item[ranked[:-1]])
    kept = np.sort(ranked[first])
    line_no = np.arange(len(kept)) - _segment_starts(view_sess[kept])
    result = np.zeros_like(is_buy)
    result[kept[line_no < max_lines]] = True
    return result


def _non_overlapping_starts(sess_user: np.ndarray, start: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Push each session later, if needed, so it starts at least one second after the user's previous one."""
    order = np.lexsort((start, sess_user))
    group = sess_user[order]
    offset = _exclusive_segment_cumsum(duration[order] + 1, group)
    adjusted = np.empty_like(start)
    adjusted[order] = offset + _segment_cummax(start[order] - offset, group)
    return adjusted


def _assemble(
    parts: list[tuple[np.ndarray, int, np.ndarray, bool, bool]],
    user: np.ndarray,
    item: np.ndarray,
    quantity: np.ndarray,
    price: np.ndarray,
    order_no: np.ndarray,
) -> _Events:
    """Stack the view/cart/purchase/return rows (each a mask over views) and sort them by time."""
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user", "item", "kind", "ts", "quantity", "price", "order")
    }
    for mask, kind, ts, with_quantity, with_order in parts:
        cols["user"].append(user[mask])
        cols["item"].append(item[mask])
        cols["kind"].append(np.full(int(mask.sum()), kind, dtype=np.int64))
        cols["ts"].append(ts[mask])
        cols["quantity"].append(quantity[mask] if with_quantity else np.full(int(mask.sum()), -1))
        cols["price"].append(price[mask])
        cols["order"].append(order_no[mask] if with_order else np.full(int(mask.sum()), -1))
    flat = {k: np.concatenate(v).astype(np.int64) for k, v in cols.items()}
    order = np.lexsort((flat["item"], flat["kind"], flat["user"], flat["ts"]))
    return _Events(
        user=flat["user"][order],
        item=flat["item"][order],
        kind=flat["kind"][order],
        ts=flat["ts"][order],
        quantity=flat["quantity"][order],
        price_cents=flat["price"][order],
        order=flat["order"][order],
    )


# --- text formatting (arrow kernels: Python strings per event would not scale) ------------------------------
def _money(cents: np.ndarray) -> pa.Array:
    """Cents as decimal text with two places ("3.95"), keeping a sign for negative amounts."""
    sign = pa.array(np.where(cents < 0, "-", ""))
    whole = pa.array(np.abs(cents) // 100).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(np.abs(cents) % 100).cast(pa.string()), 2, "0")
    return pc.binary_join_element_wise(sign, whole, ".", frac, "")


# --- defects ------------------------------------------------------------------------------------------------
def _event_defects(
    rng: np.random.Generator, ev: _Events, n_items: int, item_width: int, days: int, rate: float
) -> _Defects:
    """Choose the in-place event defects; duplicates are chosen later, from rows still clean."""
    d = _Defects.new("events", len(ev), rng)
    k = _defect_count(rate, len(ev))
    purchases = np.flatnonzero(ev.kind == PURCHASE)
    # Purchase-only classes hit about rate x purchases: rate x all events would spoil a large share of them.
    k_purchase = _defect_count(rate, len(purchases))

    rows = d.pick(purchases, k_purchase)
    d.edit(rows, "missing_user", "user_id", [None] * len(rows), "quarantine")

    rows = d.pick(purchases, k_purchase)
    variant = rng.integers(0, 3, len(rows))
    negative = _money(-ev.price_cents[rows]).to_pylist()
    d.edit(
        rows,
        "bad_price",
        "unit_price",
        [("0", "0.00", neg)[v] for v, neg in zip(variant, negative, strict=True)],
        "quarantine",
    )

    rows = d.pick(purchases, k_purchase)
    d.edit(
        rows,
        "quantity_outlier",
        "quantity",
        [str(q) for q in rng.integers(5001, 100_000, len(rows))],
        "quarantine",
    )

    rows = d.pick(None, k)
    future = ev.ts[rows] + (days + 5 * 365) * DAY
    d.edit(rows, "future_timestamp", "event_at", _timestamps(future).to_pylist(), "quarantine")

    rows = d.pick(None, k)
    d.edit(
        rows,
        "orphan_item",
        "item_id",
        _ids("I", ev.item[rows] + n_items, item_width).to_pylist(),
        "quarantine",
    )

    _malformed_values(d, ev, d.pick(None, k))
    return d


def _malformed_values(d: _Defects, ev: _Events, rows: np.ndarray) -> None:
    """Spread malformed values over quantity (a word), event_at (day-first, hour + 24) and event_type (typo).

    Each malformed text still encodes its row's original value, so two edited rows never become equal.
    """
    has_quantity = ev.quantity[rows] > 0
    column = np.where(has_quantity, d.rng.integers(0, 3, len(rows)), d.rng.integers(1, 3, len(rows)))
    quantity_rows = rows[column == 0]
    d.edit(
        quantity_rows,
        "malformed_value",
        "quantity",
        [QUANTITY_WORDS[int(q)] for q in ev.quantity[quantity_rows]],
        "quarantine",
    )
    time_rows = rows[column == 1]
    stamp = np.asarray(ev.ts[time_rows], dtype="datetime64[s]").astype(object)
    d.edit(
        time_rows,
        "malformed_value",
        "event_at",
        [f"{t:%d/%m/%Y} {t.hour + 24}:{t:%M:%S}" for t in stamp],
        "quarantine",
    )
    type_rows = rows[column == 2]
    d.edit(
        type_rows,
        "malformed_value",
        "event_type",
        [EVENT_TYPE_TYPOS[t] for t in ev.kind[type_rows]],
        "quarantine",
    )


def _with_duplicates(d: _Defects, columns: dict[str, pa.Array], count: int) -> pa.Table:
    """Insert exact copies of clean rows a little after their originals, as a retrying exporter would.

    The truth rows recorded so far are renumbered to the rows' final positions. Columns are taken out of
    `columns` one by one, so that old and new copies of a large table never coexist in full.
    """
    originals = d.pick(None, count)
    position = np.concatenate([np.arange(d.n_rows), originals + d.rng.integers(1, 51, len(originals))])
    is_copy = np.concatenate([np.zeros(d.n_rows, dtype=np.int8), np.ones(len(originals), dtype=np.int8)])
    final_order = np.lexsort((is_copy, position))
    source = np.concatenate([np.arange(d.n_rows), originals])[final_order]
    row_number = np.empty(len(final_order), dtype=np.int64)
    row_number[final_order] = np.arange(len(final_order))
    d.truth = [(row_number[rows], *rest) for rows, *rest in d.truth]
    d.truth.append((np.sort(row_number[d.n_rows :]), "duplicate", None, "quarantine"))
    indices = pa.array(source)
    return pa.table({name: columns.pop(name).take(indices) for name in list(columns)})


def _truth_table(defects: list[_Defects]) -> pa.Table:
    """One row per defect, sorted by table and row number."""
    tables, numbers, classes, columns, expected = [], [], [], [], []
    for d in defects:
        for rows, defect, column, expect in d.truth:
            tables += [d.table] * len(rows)
            numbers.append(np.asarray(rows, dtype=np.int64))
            classes += [defect] * len(rows)
            columns += [column] * len(rows)
            expected += [expect] * len(rows)
    table = pa.table(
        {
            "table": pa.array(tables, pa.string()),
            "row_number": pa.array(np.concatenate(numbers) if numbers else np.empty(0, np.int64)),
            "defect_class": pa.array(classes, pa.string()),
            "column": pa.array(columns, pa.string()),
            "expected": pa.array(expected, pa.string()),
        }
    )
    return table.sort_by([("table", "ascending"), ("row_number", "ascending")])


# --- the three tables ---------------------------------------------------------------------------------------
def _events_table(
    rng: np.random.Generator,
    ev: _Events,
    users: _Users,
    n_items: int,
    days: int,
    rate: float,
    widths: dict[str, int],
) -> tuple[pa.Table, _Defects]:
    """Events as text, with the event defects written in and the duplicates inserted."""
    columns = {
        "user_id": _ids("U", ev.user, widths["user"]),
        "item_id": _ids("I", ev.item, widths["item"]),
        "event_type": _pick_from(EVENT_TYPES, ev.kind),
        "event_at": _timestamps(ev.ts),
        "quantity": _integers(ev.quantity),
        "unit_price": _money(ev.price_cents),
        "order_id": _ids("O", ev.order, widths["order"]),
        "country": _pick_from([c for c, _ in COUNTRIES], users.country[ev.user]),
    }
    d = _event_defects(rng, ev, n_items, widths["item"], days, rate)
    d.apply(columns)
    return _with_duplicates(d, columns, _defect_count(rate, len(ev))), d


def _items_table(
    rng: np.random.Generator, cat: _Catalogue, contacts: tuple[list[str], list[str]], rate: float, width: int
) -> tuple[pa.Table, _Defects, pa.Table, pa.Table]:
    """Items, plus the truth that lets a test check repairs: clean titles, clean descriptions, leaked PII."""
    n = len(cat.titles)
    columns = {
        "item_id": _ids("I", np.arange(n), width),
        "title": pa.array(cat.titles, pa.string()),
        "description": pa.array(cat.descriptions, pa.string()),
        "category": _pick_from([c for c, _, _ in CATEGORIES], cat.category),
        "brand": pa.array(cat.brands, pa.string()),
        "price": _money(cat.price_cents),
    }
    d = _Defects.new("items", n, rng)
    k = _defect_count(rate, n)
    messy = d.pick(None, k)
    d.edit(messy, "messy_text", "title", [_messy_title(rng, cat.titles[i]) for i in messy], "repair")
    leaky = d.pick(None, k)
    emails, phones = contacts
    who = rng.integers(0, len(emails), len(leaky))
    use_email = rng.random(len(leaky)) < 0.5
    pii = [emails[w] if e else phones[w] for w, e in zip(who, use_email, strict=True)]
    d.edit(
        leaky,
        "pii_in_text",
        "description",
        [_leak(cat.descriptions[i], p, e) for i, p, e in zip(leaky, pii, use_email, strict=True)],
        "repair",
    )
    clean_titles = pa.table(
        {
            "item_id": columns["item_id"].take(pa.array(messy, pa.int64())),
            "clean_title": pa.array([cat.titles[i] for i in messy], pa.string()),
        }
    )
    clean_descriptions = pa.table(
        {
            "item_id": columns["item_id"].take(pa.array(leaky, pa.int64())),
            "clean_description": pa.array([cat.descriptions[i] for i in leaky], pa.string()),
            "pii_value": pa.array(pii, pa.string()),
        }
    )
    d.apply(columns)
    return pa.table(columns), d, clean_titles, clean_descriptions


def _messy_title(rng: np.random.Generator, title: str) -> str:
    """A damaged copy of a clean title: odd case plus stray spaces, or an escaped "&"."""
    if "&" in title and rng.random() < 0.7:
        return title.replace("&", "&amp;")
    words = title.split(" ")
    style = rng.integers(0, 3)
    words = [
        w.upper() if style == 0 else w.lower() if style == 1 else (w.upper() if j % 2 else w.lower())
        for j, w in enumerate(words)
    ]
    gap = int(rng.integers(0, max(1, len(words) - 1)))
    words[gap] += " "
    return " " * int(rng.integers(0, 2)) + " ".join(words) + " " * int(rng.integers(1, 3))


def _leak(description: str, pii: str, is_email: bool) -> str:
    """A description with a seller's contact pasted in, as happens when suppliers write the copy."""
    verb = "email" if is_email else "call"
    return f"{description} For trade orders {verb} {pii}."


def _users_table(
    rng: np.random.Generator, users: _Users, rate: float, width: int
) -> tuple[pa.Table, _Defects, tuple[list[str], list[str]]]:
    """Users with realistic (fake, reserved-domain, Ofcom drama-range) PII; returns emails and phones too."""
    n = len(users.signup_s)
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    style = rng.integers(0, 3, n)
    domain = rng.integers(0, len(EMAIL_DOMAINS), n)
    emails, names = [], []
    for i in range(n):
        given, family = FIRST_NAMES[first[i]].lower(), LAST_NAMES[last[i]].lower()
        local = (f"{given}.{family}", f"{given[0]}{family}", f"{given}_{family}")[style[i]]
        emails.append(f"{local}{i + 1}@{EMAIL_DOMAINS[domain[i]]}")
        names.append(f"{FIRST_NAMES[first[i]]} {LAST_NAMES[last[i]]}")
    phones = [f"+44 7700 900{k:03d}" for k in rng.integers(0, 1000, n)]
    columns = {
        "user_id": _ids("U", np.arange(n), width),
        "email": pa.array(emails, pa.string()),
        "phone": pa.array(phones, pa.string()),
        "full_name": pa.array(names, pa.string()),
        "country": _pick_from([c for c, _ in COUNTRIES], users.country),
        "signed_up_at": _timestamps(users.signup_s),
    }
    d = _Defects.new("users", n, rng)
    return _with_duplicates(d, columns, _defect_count(rate, n)), d, (emails, phones)


# --- entry point --------------------------------------------------------------------------------------------
def _validate(n_users: int, n_items: int, days: int, defect_rate: float) -> None:
    """Fail early on sizes the generator cannot honour (every category needs an item)."""
    if n_users < 1 or n_items < len(CATEGORIES) or days < 2:
        raise ValueError(f"need n_users >= 1, n_items >= {len(CATEGORIES)}, days >= 2")
    if not 0 <= defect_rate <= MAX_DEFECT_RATE:
        raise ValueError(f"defect_rate must be within [0, {MAX_DEFECT_RATE}]")


def _write(table: pa.Table, path: Path) -> None:
    """Parquet without varying metadata (pyarrow writes no timestamps), so bytes depend only on the data."""
    pq.write_table(table, path, compression="zstd")


# --- arrivals: the last days held back as dated drops -------------------------------------------------------
# The tables whose rows happen at a time, so that a day of them can arrive as its own file (the raw
# contract's dated drops, scoring/ingest/arrivals.py); items and users arrive whole in the initial files.
ARRIVING = {"events": "event_at", "searches": "searched_at"}


def _arrival_days(times: pa.ChunkedArray, start_s: int, end_s: int) -> np.ndarray:
    """The day (days since 1970) each row arrives on, in file order.

    A row arrives on its timestamp's day where that parses in the clean format and lies in the shop's
    period. A defective time (malformed, or five years ahead) says nothing about when the row was sent:
    such a row arrives with the row before it, among which it is written. A day is also never earlier
    than the row before (a duplicate is written up to 50 rows after its original), so each day's rows
    are one contiguous slice of the file, and the initial file followed by the drops in date order is
    exactly the file written without pending days: same rows, same order, same row keys."""
    parsed = pc.strptime(times, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    seconds = pc.fill_null(parsed.cast(pa.int64()), -1).to_numpy()
    in_period = (seconds >= start_s) & (seconds < end_s)
    days = np.where(in_period, seconds // DAY, start_s // DAY)
    return np.maximum.accumulate(days) if len(days) else days


def _date(day: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day))


def _with_arrivals(truth: pa.Table, days: dict[str, np.ndarray], first_drop_day: int) -> pa.Table:
    """The defect truth plus the day of the drop each defective row arrives in (null: the initial file)."""
    arrives: list[str | None] = []
    for table, row in zip(truth["table"].to_pylist(), truth["row_number"].to_pylist(), strict=True):
        day = days[table][row] if table in days else None
        arrives.append(_date(day).isoformat() if day is not None and day >= first_drop_day else None)
    return truth.append_column("arrives", pa.array(arrives, pa.string()))


def _write_arriving(
    table: pa.Table, name: str, days: np.ndarray, first_drop_day: int, out_dir: Path
) -> dict[str, int]:
    """The rows before first_drop_day as the initial file, each later day as a dated drop in the pending
    folder; returns the rows of each drop by day. Not arrivals.split_by_day, which files a row by its own
    time: a defective time five years ahead would make a drop of its own, years after the shop's end."""
    cut = int(np.searchsorted(days, first_drop_day))
    _write(table.slice(0, cut), out_dir / f"{name}.parquet")
    pending = arrivals.pending_dir(out_dir)
    pending.mkdir(parents=True, exist_ok=True)
    rows = {}
    for day in np.unique(days[cut:]):
        start, stop = np.searchsorted(days, [day, day + 1])
        _write(
            table.slice(int(start), int(stop - start)),
            arrivals.drop_path(pending, name, _date(day), "parquet"),
        )
        rows[_date(day).isoformat()] = int(stop - start)
    return rows


def _clear_arrivals(out_dir: Path) -> None:
    """Remove the drops of a shop written before (pending or released): a regenerated shop must not be
    read together with another one's days."""
    shutil.rmtree(arrivals.pending_dir(out_dir), ignore_errors=True)
    for name in ARRIVING:
        for drop in out_dir.glob(f"{name}-????-??-??.parquet"):
            drop.unlink()


def generate(
    out_dir: Path,
    *,
    n_users: int = 2000,
    n_items: int = 600,
    days: int = 180,
    seed: int = 42,
    defect_rate: float = 0.01,
    end_date: str = "2026-10-31",
    cadence: str = "gift",
    pending_days: int = 0,
) -> dict:
    """Write a synthetic shop into out_dir and return the summary (also in `_truth/summary.json`).

    Files (every raw column is nullable text):
      events.parquet  user_id "U000123", item_id "I00042", event_type view|cart|purchase|return,
                      event_at "YYYY-MM-DD HH:MM:SS" in [end_date - days, end_date), quantity (null for
                      views), unit_price "3.95", order_id "O0000123" (purchases and returns only), country.
      items.parquet   item_id, title, description, category, brand, price.
      users.parquet   user_id, email, phone, full_name, country, signed_up_at (fake PII, on purpose).
      searches.parquet  search_id, user_id (null = anonymous), query (as typed), searched_at, item_id,
                      action none|click|cart|purchase, position: the search log, driven by the events
                      (scoring/ingest/demo_searches.py describes it and its defects exactly).
      _truth/defects.parquet  table, row_number (0-based, in the written file), defect_class, column,
                      expected (quarantine | repair); one row per defective row.
      _truth/clean_titles.parquet        item_id, clean_title for every messy_text item.
      _truth/clean_descriptions.parquet  item_id, clean_description, pii_value for every pii_in_text item.
      _truth/clean_queries.parquet       row_number, search_id, clean_query: the normalised query of every
                                         search row not quarantined for its text.
      _truth/summary.json                parameters, row counts, defect counts, and the search log's
                                         sizes, head-query coverage and bot margin ("searches").

    cadence (CADENCES): "gift", occasional visits; "grocery", most shoppers keep a basket of 3-8
    consumable staples and make a trip every 6-12 days (their own interval, each gap +-20%), reordering
    each staple with probability 0.7, on top of the same browsing (staple views 0.2 instead of 0.12, up
    to 12 lines an order instead of 6): about 80% of purchase lines re-buy an item, a median 10 days
    after the last time (gift: about 30%, 17 days). Defects and their truth are injected the same way.

    Defects, each about defect_rate x the rows it can apply to (all events, or purchases for the
    purchase-only classes; at least 1 when the rate is positive), one per defective row:
      events: duplicate (exact copy, inserted 1-50 rows after its clean original), missing_user (purchase,
              null user_id), bad_price (purchase, "0", "0.00" or "-3.95"), quantity_outlier (purchase,
              5001-99999, above any "> 5000" rule), future_timestamp (event_at + days + 5 years),
              orphan_item (well-formed id "I{n_items + item}", not in items), malformed_value (quantity
              "two", event_at "DD/MM/YYYY HH:MM:SS" with HH = hour + 24, or event_type
              veiw|crat|purchse|retrun).
      items:  messy_text (title with stray spaces and odd case, or "&amp;"; repair = HTML-unescape,
              collapse spaces, Title Case each word), pii_in_text (description + " For trade orders
              email|call <pii>.").
      users:  duplicate (exact copy of a user row).
      searches: pii_in_query and markup_in_query (repair), empty_query, oversized_query, unknown_item
              (quarantine), each on about defect_rate x searches (every row of a chosen search), and
              bot_traffic (quarantine): one account's 600+ searches in one day (none at rate 0).

    The search log draws from its own random stream, so adding it left the other files unchanged.

    pending_days (default 0: everything in the files above): the events and searches of the last
    pending_days days are held back as dated drops, one file per day and table
    (`_pending/events-YYYY-MM-DD.parquet`, scoring/ingest/arrivals.py), which `aisle demo next-day`
    releases into out_dir one day at a time. The shop is generated whole first, so the initial files
    followed by the drops in date order are exactly the files written without pending days (a row with a
    defective time arrives with its neighbours, `_arrival_days`). Row numbers in the truth count over
    that whole sequence; the defect truth gets an `arrives` column (the drop's day, null for the initial
    file), and the summary the rows of each drop ("drops"). Drops of a shop written before are removed.
    """
    _validate(n_users, n_items, days, defect_rate)
    if not 0 <= pending_days < days:
        raise ValueError(f"pending_days must be within [0, days): got {pending_days} of {days}")
    if cadence not in CADENCES:
        raise ValueError(f"cadence must be one of {sorted(CADENCES)}")
    profile = CADENCES[cadence]
    out_dir = Path(out_dir)
    truth_dir = out_dir / "_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    end_s = int(np.datetime64(end_date, "s").astype(np.int64))
    start_s = end_s - days * DAY

    cat = _build_catalogue(rng, n_items)
    users = _build_users(rng, n_users, start_s, end_s, cat)
    if profile.trips:
        users = _with_baskets(rng, users, cat, profile)
    ev, steps = _simulate_events(rng, users, cat, start_s, end_s, profile)
    widths = {
        "user": _id_width(6, n_users),
        "item": _id_width(5, 2 * n_items),
        "order": _id_width(7, int(ev.order.max(initial=0))),
    }
    users_table, user_defects, contacts = _users_table(rng, users, defect_rate, widths["user"])
    items_table, item_defects, clean_titles, clean_descriptions = _items_table(
        rng, cat, contacts, defect_rate, widths["item"]
    )
    events_table, event_defects = _events_table(rng, ev, users, n_items, days, defect_rate, widths)
    search_log = demo_searches.searches(
        seed, cat, users, steps, contacts, start_s, end_s, defect_rate, widths
    )
    truth = _truth_table([event_defects, item_defects, user_defects, search_log.defects])
    tables = {"events": events_table, "searches": search_log.table}
    first_drop_day = end_s // DAY - pending_days
    arrival = {}
    if pending_days:
        arrival = {
            name: _arrival_days(tables[name][column], start_s, end_s) for name, column in ARRIVING.items()
        }
        truth = _with_arrivals(truth, arrival, first_drop_day)

    files = {
        "events.parquet": events_table,
        "items.parquet": items_table,
        "users.parquet": users_table,
        "searches.parquet": search_log.table,
        "_truth/defects.parquet": truth,
        "_truth/clean_titles.parquet": clean_titles,
        "_truth/clean_descriptions.parquet": clean_descriptions,
        "_truth/clean_queries.parquet": search_log.clean_queries,
    }
    _clear_arrivals(out_dir)
    drops: dict[str, dict[str, int]] = {}
    for name, table in files.items():
        stem = name.removesuffix(".parquet")
        if stem in arrival:
            for day, rows in _write_arriving(table, stem, arrival[stem], first_drop_day, out_dir).items():
                drops.setdefault(day, {})[stem] = rows
        else:
            _write(table, out_dir / name)
    params = shop_parameters(
        n_users=n_users,
        n_items=n_items,
        days=days,
        seed=seed,
        defect_rate=defect_rate,
        end_date=end_date,
        cadence=cadence,
        pending_days=pending_days,
    )
    summary = _summary(
        params, files, [event_defects, item_defects, user_defects, search_log.defects], ev, start_s, end_s
    )
    summary["searches"] = search_log.stats
    if pending_days:
        summary["drops"] = dict(sorted(drops.items()))
    (truth_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def shop_parameters(
    *,
    n_users: int,
    n_items: int,
    days: int,
    seed: int,
    defect_rate: float,
    end_date: str,
    cadence: str,
    pending_days: int = 0,
) -> dict:
    """The parameters a summary records, which also tell a caller whether files on disk are still current.

    The default cadence and no pending days are left out so that shops written before those settings
    existed stay current and byte-identical.
    """
    params: dict = dict(
        n_users=n_users, n_items=n_items, days=days, seed=seed, defect_rate=defect_rate, end_date=end_date
    )
    if cadence != "gift":
        params["cadence"] = cadence
    if pending_days:
        params["pending_days"] = pending_days
    return params


def _summary(
    params: dict, files: dict[str, pa.Table], defects: list[_Defects], ev: _Events, start_s: int, end_s: int
) -> dict:
    """Parameters, row counts and defect counts: what tests and the dbt side compare against."""
    counts: dict[str, dict[str, int]] = {d.table: {} for d in defects}
    for d in defects:
        for rows, defect, _, _ in d.truth:
            counts[d.table][defect] = counts[d.table].get(defect, 0) + len(rows)
    kinds = np.bincount(ev.kind, minlength=len(EVENT_TYPES))
    return {
        "parameters": params,
        "period": {
            "start": _timestamps(np.array([start_s])).to_pylist()[0],
            "end_exclusive": _timestamps(np.array([end_s])).to_pylist()[0],
        },
        "row_counts": {name: table.num_rows for name, table in files.items()},
        "clean_events_by_type": {t: int(n) for t, n in zip(EVENT_TYPES, kinds, strict=True)},
        "defects": counts,
    }
