"""The building blocks that the demo shop (demo_shop) and its search log (demo_searches) both use.

Why it exists: demo_shop simulates the shop and writes its files, and demo_searches writes the search log
from the same simulation, so both need the catalogue vocabulary, the catalogue and users, the session
steps, the raw-text formatting and the defect bookkeeping. Kept here, below both, the imports run one way
(demo_shop -> demo_searches -> demo_parts) and neither module has to import the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400

# --- catalogue vocabulary ----------------------------------------------------------------------------------
# Every title word is already "Title Case" (first letter upper, the rest lower, no hyphens) so that a repair
# of whitespace + case + HTML entities restores the clean title exactly.
# fmt: off
# (category, weight, ((product type, base price, materials, consumable), ...))
CATEGORIES: tuple[tuple[str, float, tuple[tuple[str, float, tuple[str, ...], bool], ...]], ...] = (
    ("Kitchen", 1.4, (
        ("Mug", 4.95, ("Ceramic", "Enamel", "Stoneware"), False),
        ("Teapot", 18.95, ("Ceramic", "Cast Iron", "Glass"), False),
        ("Tea Towel", 3.95, ("Cotton", "Linen"), False),
        ("Storage Jar", 6.45, ("Glass", "Ceramic"), False),
        ("Straws", 1.95, ("Paper", "Bamboo"), True),
        ("Coffee Filters", 2.45, ("Paper",), True),
    )),
    ("Home Decor", 1.2, (
        ("Photo Frame", 7.95, ("Wood", "Metal", "Brass"), False),
        ("Vase", 12.95, ("Glass", "Ceramic"), False),
        ("Wall Clock", 19.95, ("Wood", "Metal"), False),
        ("Doorstop", 9.95, ("Cast Iron", "Fabric"), False),
    )),
    ("Garden", 0.9, (
        ("Plant Pot", 5.95, ("Terracotta", "Ceramic", "Zinc"), False),
        ("Watering Can", 11.95, ("Zinc", "Metal"), False),
        ("Seed Packet", 1.45, ("Sunflower", "Wildflower", "Sweet Pea"), True),
        ("Bird Feeder", 8.95, ("Wood", "Metal"), False),
    )),
    ("Stationery", 1.1, (
        ("Notebook", 3.45, ("Paper", "Recycled Paper"), True),
        ("Greeting Card", 1.95, ("Paper", "Recycled Paper"), True),
        ("Wrapping Paper", 1.25, ("Glossy", "Kraft"), True),
        ("Pen Set", 6.95, ("Metal", "Bamboo"), False),
    )),
    ("Toys", 0.8, (
        ("Jigsaw Puzzle", 9.95, ("Wood", "Cardboard"), False),
        ("Spinning Top", 2.95, ("Wood", "Tin"), False),
        ("Rag Doll", 12.95, ("Cotton", "Felt"), False),
        ("Building Blocks", 14.95, ("Wood",), False),
    )),
    ("Lighting", 0.9, (
        ("Lantern", 14.95, ("Glass", "Metal", "Zinc"), False),
        ("Fairy Lights", 8.95, ("Copper", "Glass"), False),
        ("Table Lamp", 29.95, ("Ceramic", "Brass", "Wood"), False),
        ("Light Bulb", 3.95, ("Glass",), True),
    )),
    ("Bath", 0.9, (
        ("Soap Bar", 2.95, ("Olive Oil", "Shea Butter"), True),
        ("Bath Bomb", 2.45, ("Shea Butter", "Sea Salt"), True),
        ("Bath Towel", 12.95, ("Cotton", "Linen"), False),
        ("Soap Dish", 4.95, ("Ceramic", "Bamboo"), False),
    )),
    ("Textiles", 1.1, (
        ("Cushion Cover", 8.95, ("Cotton", "Linen", "Velvet"), False),
        ("Throw", 24.95, ("Wool", "Cotton"), False),
        ("Tote Bag", 4.95, ("Canvas", "Jute"), False),
        ("Apron", 9.95, ("Cotton", "Linen"), False),
    )),
    ("Party", 0.8, (
        ("Napkins", 1.95, ("Paper",), True),
        ("Plates", 2.45, ("Paper", "Bamboo"), True),
        ("Bunting", 5.95, ("Cotton", "Paper"), False),
        ("Balloons", 2.95, ("Latex",), True),
    )),
    ("Storage", 0.8, (
        ("Storage Box", 9.95, ("Wood", "Cardboard", "Metal"), False),
        ("Basket", 14.95, ("Wicker", "Jute"), False),
        ("Coat Hook", 3.95, ("Cast Iron", "Brass"), False),
        ("Drawer Liner", 3.45, ("Paper",), True),
    )),
    ("Candles", 1.0, (
        ("Scented Candle", 7.95, ("Soy Wax", "Beeswax"), True),
        ("Tealight Set", 2.95, ("Paraffin", "Soy Wax"), True),
        ("Candle Holder", 5.95, ("Glass", "Brass", "Ceramic"), False),
        ("Wax Melts", 3.45, ("Soy Wax",), True),
    )),
    ("Christmas", 1.0, (
        ("Bauble", 2.45, ("Glass", "Felt"), False),
        ("Christmas Cracker", 6.95, ("Paper",), True),
        ("Stocking", 9.95, ("Felt", "Wool"), False),
        ("Advent Calendar", 7.95, ("Cardboard", "Wood"), False),
    )),
)
# "&" in colours gives the HTML-entity defect something to escape.
COLOURS: tuple[str, ...] = (
    "Red", "Blue", "Green", "Pink", "White", "Black", "Cream", "Yellow", "Grey", "Navy",
    "Red & White", "Blue & White", "Black & Gold",
)
# fmt: on


@dataclass(frozen=True)
class _Catalogue:
    """Item attributes as arrays, so sampling millions of views stays vectorised."""

    category: np.ndarray
    colour: np.ndarray
    material: np.ndarray
    consumable: np.ndarray
    price_cents: np.ndarray
    popularity: np.ndarray
    titles: list[str]
    descriptions: list[str]
    brands: list[str]


@dataclass(frozen=True)
class _Users:
    """Latent tastes and activity of the users; only the PII columns reach users.parquet."""

    taste: np.ndarray
    fav_colour: np.ndarray
    fav_material: np.ndarray
    signup_s: np.ndarray
    activity: np.ndarray
    country: np.ndarray
    staples: np.ndarray
    n_staples: np.ndarray


@dataclass(frozen=True)
class Steps:
    """The kept session steps (a view, then its cart and purchase if any), one entry per view event.

    The search log (demo_searches) is driven by these, so that a search's click, cart and purchase are
    the same shopper's view, cart and purchase events of the same item. -1 = no cart / no purchase.
    """

    user: np.ndarray
    item: np.ndarray
    session: np.ndarray
    category: np.ndarray  # the session's category (drawn from the shopper's taste)
    view_ts: np.ndarray
    cart_ts: np.ndarray
    buy_ts: np.ndarray
    gap_before: np.ndarray  # seconds since the shopper's previous event (>= 1)

    def __len__(self) -> int:
        return len(self.user)


def _product_types() -> list[tuple[int, str, float, tuple[str, ...], bool]]:
    """The product types of every category, flattened, with their category index."""
    return [(c, *pt) for c, (_, _, types) in enumerate(CATEGORIES) for pt in types]


def _materials() -> list[str]:
    """Every material name once, in a stable order."""
    return sorted({m for _, _, _, mats, _ in _product_types() for m in mats})


def _normalised(weights: np.ndarray | list[float]) -> np.ndarray:
    """Weights as probabilities, for rng.choice."""
    array = np.asarray(weights, dtype=np.float64)
    return array / array.sum()


def _sample_in_groups(
    rng: np.random.Generator, keys: np.ndarray, weights_of: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Draw one item per key, where `weights_of(key)` gives item weights (length n_items) for that key.

    Draws are sorted by key so that each distinct key costs one small CDF, not one per draw: there are a few
    thousand keys but millions of draws.
    """
    u = rng.random(len(keys))
    drawn = np.empty(len(keys), dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    for key, lo, hi in zip(unique, starts, [*starts[1:], len(keys)], strict=True):
        cdf = np.cumsum(weights_of(int(key)))
        rows = order[lo:hi]
        drawn[rows] = np.minimum(np.searchsorted(cdf, u[rows] * cdf[-1], side="right"), len(cdf) - 1)
    return drawn


# --- text formatting (arrow kernels: Python strings per event would not scale) ------------------------------
def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Zero-padded ids such as "U000123"; -1 becomes null."""
    padded = pc.utf8_lpad(pa.array(numbers, mask=numbers < 0).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, padded, "")


def _timestamps(seconds: np.ndarray) -> pa.Array:
    """Epoch seconds as "YYYY-MM-DD HH:MM:SS"."""
    return pa.array(seconds, pa.timestamp("s")).cast(pa.string())


def _integers(values: np.ndarray) -> pa.Array:
    """Integers as text; -1 becomes null."""
    return pa.array(values, mask=values < 0).cast(pa.string())


def _pick_from(strings: list[str] | tuple[str, ...], indices: np.ndarray) -> pa.Array:
    """Vectorised lookup of a small vocabulary; -1 becomes null."""
    return pc.take(pa.array(strings, pa.string()), pa.array(indices, mask=indices < 0))


def _id_width(default: int, largest: int) -> int:
    """The usual id width, widened only when a run is large enough to need more digits."""
    return max(default, len(str(largest)))


# --- defects ------------------------------------------------------------------------------------------------
@dataclass
class _Defects:
    """Row edits and truth records of one table, applied once all classes are chosen."""

    table: str
    n_rows: int
    rng: np.random.Generator
    taken: np.ndarray
    edits: dict[str, list[tuple[np.ndarray, list[str | None]]]]
    truth: list[tuple[np.ndarray, str, str | None, str]]

    @classmethod
    def new(cls, table: str, n_rows: int, rng: np.random.Generator) -> _Defects:
        """No defects yet: every row clean."""
        return cls(table, n_rows, rng, np.zeros(n_rows, dtype=bool), {}, [])

    def pick(self, pool: np.ndarray | None, count: int) -> np.ndarray:
        """Distinct, still-clean rows of the pool (all rows if None), so no row carries two defects."""
        pool = np.arange(self.n_rows) if pool is None else pool
        free = pool[~self.taken[pool]]
        rows = np.sort(self.rng.choice(free, size=min(count, len(free)), replace=False))
        self.taken[rows] = True
        return rows

    def edit(
        self, rows: np.ndarray, defect: str, column: str, values: list[str | None], expected: str
    ) -> None:
        """Record new text for some rows of one column, and the truth rows that name that defect."""
        self.edits.setdefault(column, []).append((rows, values))
        self.truth.append((rows, defect, column, expected))

    def apply(self, columns: dict[str, pa.Array]) -> None:
        """Write every edit into the columns, in place, so that a 10M-row column exists only once."""
        for column, edits in self.edits.items():
            rows = np.concatenate([r for r, _ in edits])
            values = [v for _, vs in edits for v in vs]
            order = np.argsort(rows)
            mask = np.zeros(self.n_rows, dtype=bool)
            mask[rows] = True
            replacement = pa.array([values[i] for i in order], pa.string())
            columns[column] = pc.replace_with_mask(columns[column], pa.array(mask), replacement)


def _defect_count(rate: float, n_rows: int) -> int:
    """About rate x rows, and at least one whenever defects are on, so every class is testable."""
    return 0 if rate <= 0 else max(1, round(rate * n_rows))
