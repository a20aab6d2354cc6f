"""The demo shop's search log (`searches.parquet`): what shoppers typed, and what they did with the results.

Why it exists: search needs a log whose queries, clicks and purchases are consistent with the shop's events
and personal to its shoppers, so that a ranker which knows a shopper's taste can be shown to beat one that
does not, and whose defects are known row by row, so that the dbt rules can be scored exactly.

How it is driven. A share of every known shopper's views comes from a search: the search is logged just
before the view (after the shopper's previous event), its query describes the viewed item from the
shopper's point of view (the product type, or a synonym; sometimes its colour and/or material, more often
when they are the shopper's favourite), and the search has a `click` row on that item, then a `cart` row
if the view was carted and a `purchase` row if it was bought (the same shopper's cart and purchase events
of the same item). Broad queries (the type alone) match about ten items each, and which one a shopper acts
on is the one the events chose by their taste (category, favourite colour and material). Other searches
end with no action (one `none` row): in the session's category, or for things the shop does not sell.
Anonymous visitors (null user_id) search too, and act on popular items (clicks only: they have no events).
Typed text varies as real input does: synonyms and plurals, a misspelt word, mixed case, stray spaces;
after normalisation (lower case, trimmed, inner spaces collapsed) a few hundred head queries cover most
searches (the summary records the share of the top 100 and top 300).

File (every column nullable text, like the other raw tables), rows sorted by searched_at then search_id,
one row per interaction:
  search_id    "S0000001", in time order; shared by the rows of one search.
  user_id      "U000123"; null = anonymous.
  query        as typed.
  searched_at  "YYYY-MM-DD HH:MM:SS" in the events' period.
  item_id      "I00042"; null when action is none.
  action       none | click | cart | purchase. A search with no interaction is one `none` row; a search
               that led to a purchase has three rows (click, cart, purchase) with the same search_id,
               query, searched_at, item_id and position.
  position     1-based rank the item was shown at (position bias: P(k) ~ k^-1.1, k = 1..24); null for none.

Clean queries hold only lower/upper-case ASCII letters and spaces (no digits, no `@`, `<`, `>`, `'`, `;`),
at most 60 characters. `_truth/clean_queries.parquet` (row_number, search_id, clean_query) gives, for every
row whose query is not quarantined for its text, the normalised query staging must produce: NFKC, markup
stripped, PII redacted, lower case, trimmed, inner whitespace collapsed to one space.

Injected defects (one class per search; every row of a chosen search carries it; rows appended to
`_truth/defects.parquet` with table = "searches", row_number in searches.parquet). k = about
defect_rate x searches (at least 1 when the rate is positive) searches per class, except the bot:
  pii_in_query     column query, expected repair (the row is kept). The query is a shopper's e-mail
                   address ("jane.doe12@example.com", the shopper's own when known) or UK phone number
                   ("+44 7700 900123"), alone or after a clean query ("red mug jane.doe12@example.com",
                   "order +44 7700 900123"). Repair: every e-mail becomes "[email]", every phone "[phone]"
                   (the tokens of the redact_pii macro), then normalised: "red mug [email]", "order [phone]",
                   "[email]".
  markup_in_query  column query, expected repair (the row is kept, the query cleaned). Either HTML around
                   or after a clean query: "<b>red mug</b>", "<i>mug</i>", '<span class="hl">mug</span>',
                   "mug <br>", "mug <img src=x onerror=alert(1)>" (every tag `<[^>]*>` removed, the text
                   between tags kept; tags always touch a space or an end, so removing them with or
                   without a space gives the same normalised query), or a SQL-injection tail after a clean
                   query: "'; drop table items; --", "' or '1'='1", "' union select email from users --",
                   "'); delete from searches; --" (everything from the first single quote on is dropped;
                   every tail matches the regex `'\\s*(;|\\)|or |union )`). Expected clean_query: the clean
                   query, normalised ("<b>Red Mug</b>" -> "red mug", "mug'; drop table items; --" -> "mug").
  empty_query      column query, expected quarantine: "" (empty), "   " (spaces only) or null.
  oversized_query  column query, expected quarantine: a pasted product description repeated, 520 to 2,000
                   characters after normalisation (over max_query_chars = 512).
  unknown_item     column item_id, expected quarantine: every item row of the search (click, cart,
                   purchase) names "I{n_items + item}", well-formed but not in items.parquet.
  bot_traffic      column user_id, expected quarantine: one account, "U{n_users}" (the id after the last
                   shopper: not in users.parquet, no events), issues max(600, 5% of all searches, at most
                   20,000) clean `none` searches of catalogue queries, every few seconds, all within one
                   calendar day (from about 01:00, the middle day of the period). Every one of its rows is
                   a defect. No real shopper (nor the anonymous traffic, which has no user) comes near: the
                   summary records the most searches a real shopper made in a calendar day (under 100 at
                   the default and test scales), so any bot_searches_per_day threshold from 100 to 599
                   separates them, per calendar day or per rolling 24 hours.
With defect_rate = 0 there are no defects and no bot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from scoring.ingest import demo_parts as parts

COLUMNS: tuple[str, ...] = ("search_id", "user_id", "query", "searched_at", "item_id", "action", "position")
ACTIONS: tuple[str, ...] = ("none", "click", "cart", "purchase")

# What shoppers type for each product type: the first name is the most common, then synonyms and plurals.
# fmt: off
TYPE_NAMES: dict[str, tuple[str, ...]] = {
    "Mug": ("mug", "mugs", "coffee mug", "cup"), "Teapot": ("teapot", "tea pot"),
    "Tea Towel": ("tea towel", "dish towel", "kitchen towel"),
    "Storage Jar": ("storage jar", "jar", "kitchen jar"),
    "Straws": ("straws", "drinking straws"), "Coffee Filters": ("coffee filters", "coffee filter papers"),
    "Photo Frame": ("photo frame", "picture frame", "frame"), "Vase": ("vase", "flower vase"),
    "Wall Clock": ("wall clock", "clock"), "Doorstop": ("doorstop", "door stop"),
    "Plant Pot": ("plant pot", "planter", "flower pot"), "Watering Can": ("watering can",),
    "Seed Packet": ("seeds", "seed packet"), "Bird Feeder": ("bird feeder",),
    "Notebook": ("notebook", "notepad", "journal"),
    "Greeting Card": ("greeting card", "card", "birthday card"),
    "Wrapping Paper": ("wrapping paper", "gift wrap"), "Pen Set": ("pen set", "pens"),
    "Jigsaw Puzzle": ("jigsaw puzzle", "jigsaw", "puzzle"), "Spinning Top": ("spinning top",),
    "Rag Doll": ("rag doll", "doll"), "Building Blocks": ("building blocks", "blocks"),
    "Lantern": ("lantern",), "Fairy Lights": ("fairy lights", "string lights"),
    "Table Lamp": ("table lamp", "lamp", "bedside lamp"), "Light Bulb": ("light bulb", "bulb"),
    "Soap Bar": ("soap", "soap bar"), "Bath Bomb": ("bath bomb", "bath bombs"),
    "Bath Towel": ("bath towel", "towel"), "Soap Dish": ("soap dish",),
    "Cushion Cover": ("cushion cover", "cushion", "pillow cover"), "Throw": ("throw", "blanket"),
    "Tote Bag": ("tote bag", "tote", "shopping bag"), "Apron": ("apron",),
    "Napkins": ("napkins", "serviettes"), "Plates": ("paper plates", "plates"),
    "Bunting": ("bunting",), "Balloons": ("balloons",),
    "Storage Box": ("storage box", "box"), "Basket": ("basket", "storage basket"),
    "Coat Hook": ("coat hook", "hooks"), "Drawer Liner": ("drawer liner",),
    "Scented Candle": ("scented candle", "candle"), "Tealight Set": ("tealights", "tea lights"),
    "Candle Holder": ("candle holder",), "Wax Melts": ("wax melts",),
    "Bauble": ("bauble", "christmas bauble"), "Christmas Cracker": ("christmas crackers", "crackers"),
    "Stocking": ("stocking", "christmas stocking"), "Advent Calendar": ("advent calendar",),
}
# Things shoppers look for that the shop does not sell: these searches end with no action.
OFF_CATALOGUE: tuple[str, ...] = (
    "sofa", "kettle", "phone case", "dog bed", "umbrella", "headphones", "sunglasses", "toaster", "rug",
    "mirror", "duvet", "wine glasses", "cutlery", "laptop bag", "yoga mat", "board game", "perfume",
)
# fmt: on
NEIGHBOUR_KEYS = dict(zip("abcdefghijklmnopqrstuvwxyz", "sqxsrdfgujlkknpolteyiwcztv", strict=True))
HTML_FORMS: tuple[str, ...] = (
    "<b>{q}</b>",
    "<i>{q}</i>",
    '<span class="hl">{q}</span>',
    "{q} <br>",
    "{q} <img src=x onerror=alert(1)>",
)
SQL_TAILS: tuple[str, ...] = (
    "'; drop table items; --",
    "' or '1'='1",
    "' union select email from users --",
    "'); delete from searches; --",
)

SEARCH_SHARE = 0.3  # share of a known shopper's views that come from a search
NONE_SHARE = 0.12  # share of views preceded by a search that ended with no click
OFF_CATALOGUE_SHARE = 0.15  # share of no-click searches for something the shop does not sell
ANONYMOUS_SHARE = 0.12  # share of searches by visitors who are not logged in
ANONYMOUS_CLICK_RATE = 0.55
COLOUR_P, FAVOURITE_COLOUR_P = 0.12, 0.45  # how often a query names the item's colour (favourite or not)
MATERIAL_P, FAVOURITE_MATERIAL_P = 0.08, 0.35
FIRST_NAME_P = 0.55  # the first (most common) name of a product type; the synonyms share the rest
MISSPELL_RATE, NONE_MISSPELL_RATE = 0.06, 0.2
MAX_POSITION, POSITION_DECAY = 24, 1.1
MAX_DELAY = 30  # a search precedes its view by 1 to 30 seconds (never before the shopper's previous event)
BOT_MIN_SEARCHES, BOT_SHARE, BOT_MAX_SEARCHES = 600, 0.05, 20_000
BOT_START_S = 3600  # the bot starts at about 01:00
MAX_QUERY_CHARS = 512
HEAD_SIZES = (100, 300)
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+[0-9]{1,3}[ -]?[0-9][0-9 ()-]{6,}[0-9]")


@dataclass
class _Log:
    """One entry per search, before the rows are expanded: numbers (-1 = null) and the typed text."""

    user: np.ndarray
    ts: np.ndarray
    item: np.ndarray
    depth: np.ndarray  # 0 = no action, 1 = click, 2 = click + cart, 3 = click + cart + purchase
    position: np.ndarray
    query: list[str | None]
    clean: list[str | None]  # the normalised query staging must produce; None when quarantined for text

    def __len__(self) -> int:
        return len(self.user)


def normalise(text: str) -> str:
    """The clean form of a clean query: lower case, trimmed, inner whitespace collapsed."""
    return " ".join(text.lower().split())


def _redact(text: str) -> str:
    """E-mail addresses and phone numbers replaced by the redact_pii macro's tokens."""
    return PHONE.sub("[phone]", EMAIL.sub("[email]", text))


def _misspell(query: str, u: np.ndarray) -> str:
    """One typing slip in the longest word: a dropped, swapped, doubled or neighbouring-key letter."""
    words = query.split(" ")
    w = max(range(len(words)), key=lambda j: len(words[j]))
    word = words[w]
    if len(word) < 4:
        return query
    at = 1 + int(u[0] * (len(word) - 2))  # never the first letter, as in real typos
    kind = int(u[1] * 4)
    if kind == 0:
        slipped = word[:at] + word[at + 1 :]
    elif kind == 1 and word[at] != word[at - 1]:
        slipped = word[: at - 1] + word[at] + word[at - 1] + word[at + 1 :]
    elif kind == 2:
        slipped = word[:at] + word[at] + word[at:]
    else:
        slipped = word[:at] + NEIGHBOUR_KEYS.get(word[at], "e") + word[at + 1 :]
    words[w] = slipped
    return " ".join(words)


def _typed(query: str, u: np.ndarray) -> str:
    """Mixed case and stray spaces, as typed; normalisation undoes both."""
    c, s = u
    if c < 0.78:
        typed = query
    elif c < 0.9:
        typed = " ".join(w.capitalize() for w in query.split(" "))
    elif c < 0.95:
        typed = query.capitalize()
    elif c < 0.98:
        typed = query.upper()
    else:
        typed = "".join(ch.upper() if j % 2 else ch for j, ch in enumerate(query))
    if s < 0.06:
        typed = " " + typed
    elif s < 0.12:
        typed += "  "
    elif s < 0.18:
        typed = typed.replace(" ", "  ", 1) if " " in typed else typed + " "
    return typed


class _Describer:
    """Queries for items: a product type name, sometimes with the item's colour and/or material."""

    def __init__(self, cat: parts._Catalogue) -> None:
        types = parts._product_types()
        self.cat = cat
        self.materials = [m.lower() for m in parts._materials()]
        self.colours = [c.lower().replace(" & ", " and ") for c in parts.COLOURS]
        # The product type of each item, from its title's ending (titles end with the type name).
        names = sorted((t[1] for t in types), key=len, reverse=True)
        self.item_type = [next(n for n in names if title.endswith(n)) for title in cat.titles]

    def name(self, product_type: str, u: float) -> str:
        names = TYPE_NAMES[product_type]
        if u < FIRST_NAME_P or len(names) == 1:
            return names[0]
        return names[1 + min(len(names) - 2, int((u - FIRST_NAME_P) / (1 - FIRST_NAME_P) * (len(names) - 1)))]

    def describe(self, item: int, colour: int, material: int, u: np.ndarray) -> str:
        """u: name, colour, material draws; colour/material is -1 for a visitor with no known taste."""
        words = [self.name(self.item_type[item], u[0])]
        item_material = int(self.cat.material[item])
        p_material = FAVOURITE_MATERIAL_P if item_material == material else MATERIAL_P
        if u[2] < p_material:
            words.insert(0, self.materials[item_material])
        item_colour = int(self.cat.colour[item])
        p_colour = FAVOURITE_COLOUR_P if item_colour == colour else COLOUR_P
        if u[1] < p_colour:
            words.insert(0, self.colours[item_colour])
        return " ".join(words)


def _positions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ranks the acted-on items were shown at, with position bias."""
    weights = 1.0 / np.arange(1, MAX_POSITION + 1) ** POSITION_DECAY
    return 1 + rng.choice(MAX_POSITION, n, p=weights / weights.sum())


def _delays(rng: np.random.Generator, gap_before: np.ndarray) -> np.ndarray:
    """Seconds between a search and the view it led to: at least 1, and never before the previous event."""
    room = np.minimum(gap_before, MAX_DELAY) - 1
    return 1 + np.floor(rng.random(len(gap_before)) * room).astype(np.int64)


def _queries(
    rng: np.random.Generator,
    describer: _Describer,
    items: np.ndarray,
    colour: np.ndarray,
    material: np.ndarray,
    misspell_rate: float,
    off_catalogue: np.ndarray | None = None,
) -> tuple[list[str], list[str]]:
    """Typed queries and their normalised forms for searches that describe `items`."""
    n = len(items)
    u = rng.random((n, 8))
    typed, clean = [], []
    for j in range(n):
        if off_catalogue is not None and off_catalogue[j]:
            query = OFF_CATALOGUE[int(u[j, 0] * len(OFF_CATALOGUE))]
        else:
            query = describer.describe(int(items[j]), int(colour[j]), int(material[j]), u[j, :3])
        if u[j, 3] < misspell_rate:
            query = _misspell(query, u[j, 4:6])
        text = _typed(query, u[j, 6:8])
        typed.append(text)
        clean.append(normalise(text))
    return typed, clean


def _known_searches(
    rng: np.random.Generator,
    describer: _Describer,
    users: parts._Users,
    cat: parts._Catalogue,
    steps: parts.Steps,
) -> _Log:
    """Searches of logged-in shoppers: before a share of their views (acted on) or with no action."""
    u = rng.random(len(steps))
    driven = np.flatnonzero(u < SEARCH_SHARE)
    idle = np.flatnonzero((u >= SEARCH_SHARE) & (u < SEARCH_SHARE + NONE_SHARE))

    user = steps.user[driven]
    depth = 1 + (steps.cart_ts[driven] >= 0) + (steps.buy_ts[driven] >= 0)
    typed, clean = _queries(
        rng, describer, steps.item[driven], users.fav_colour[user], users.fav_material[user], MISSPELL_RATE
    )
    acted = _Log(
        user=user,
        ts=steps.view_ts[driven] - _delays(rng, steps.gap_before[driven]),
        item=steps.item[driven],
        depth=depth.astype(np.int64),
        position=_positions(rng, len(driven)),
        query=typed,
        clean=clean,
    )

    # No-click searches look in the session's category, as the shopper's taste would.
    idle_user = steps.user[idle]
    looked_for = parts._sample_in_groups(
        rng, steps.category[idle], lambda c: cat.popularity * (cat.category == c)
    )
    typed, clean = _queries(
        rng,
        describer,
        looked_for,
        users.fav_colour[idle_user],
        users.fav_material[idle_user],
        NONE_MISSPELL_RATE,
        off_catalogue=rng.random(len(idle)) < OFF_CATALOGUE_SHARE,
    )
    idle_log = _Log(
        user=idle_user,
        ts=steps.view_ts[idle] - _delays(rng, steps.gap_before[idle]),
        item=np.full(len(idle), -1),
        depth=np.zeros(len(idle), dtype=np.int64),
        position=np.full(len(idle), -1),
        query=typed,
        clean=clean,
    )
    return _concat([acted, idle_log])


def _anonymous_searches(
    rng: np.random.Generator, describer: _Describer, cat: parts._Catalogue, n: int, start_s: int, end_s: int
) -> _Log:
    """Visitors who are not logged in: popular items, clicks or nothing, at any time."""
    items = rng.choice(len(cat.popularity), n, p=parts._normalised(cat.popularity))
    clicked = rng.random(n) < ANONYMOUS_CLICK_RATE
    no_taste = np.full(n, -1)
    off = ~clicked & (rng.random(n) < OFF_CATALOGUE_SHARE)
    typed, clean = _queries(rng, describer, items, no_taste, no_taste, MISSPELL_RATE, off_catalogue=off)
    return _Log(
        user=np.full(n, -1),
        ts=rng.integers(start_s, end_s - MAX_DELAY, n),
        item=np.where(clicked, items, -1),
        depth=clicked.astype(np.int64),
        position=np.where(clicked, _positions(rng, n), -1),
        query=typed,
        clean=clean,
    )


def _bot_searches(
    rng: np.random.Generator, describer: _Describer, n: int, bot_user: int, start_s: int, days: int
) -> _Log:
    """A scraper on one account: catalogue queries in order, every 1-8 seconds, within one calendar day."""
    queries = [f"{colour} {names[0]}" for names in TYPE_NAMES.values() for colour in ("", *describer.colours)]
    queries = [q.strip() for q in queries]
    spacing_max = max(1, min(8, 70_000 // max(1, n)))
    day_start = start_s + (days // 2) * parts.DAY + BOT_START_S + int(rng.integers(0, 1800))
    ts = day_start + np.cumsum(rng.integers(0 if spacing_max == 1 else 1, spacing_max + 1, n))
    typed = [queries[j % len(queries)] for j in range(n)]
    return _Log(
        user=np.full(n, bot_user),
        ts=ts,
        item=np.full(n, -1),
        depth=np.zeros(n, dtype=np.int64),
        position=np.full(n, -1),
        query=typed,
        clean=list(typed),
    )


def _concat(logs: list[_Log]) -> _Log:
    return _Log(
        user=np.concatenate([g.user for g in logs]).astype(np.int64),
        ts=np.concatenate([g.ts for g in logs]).astype(np.int64),
        item=np.concatenate([g.item for g in logs]).astype(np.int64),
        depth=np.concatenate([g.depth for g in logs]).astype(np.int64),
        position=np.concatenate([g.position for g in logs]).astype(np.int64),
        query=[q for g in logs for q in g.query],
        clean=[q for g in logs for q in g.clean],
    )


def _take(log: _Log, order: np.ndarray) -> _Log:
    return _Log(
        user=log.user[order],
        ts=log.ts[order],
        item=log.item[order],
        depth=log.depth[order],
        position=log.position[order],
        query=[log.query[i] for i in order],
        clean=[log.clean[i] for i in order],
    )


@dataclass
class _SearchDefects:
    """Defect classes chosen per search; each search carries at most one."""

    taken: np.ndarray
    chosen: list[tuple[np.ndarray, str, str, str]]  # (search indices, class, column, expected)
    rng: np.random.Generator

    def pick(self, pool: np.ndarray, count: int) -> np.ndarray:
        free = pool[~self.taken[pool]]
        rows = np.sort(self.rng.choice(free, size=min(count, len(free)), replace=False))
        self.taken[rows] = True
        return rows


def _inject(
    rng: np.random.Generator,
    log: _Log,
    is_bot: np.ndarray,
    cat: parts._Catalogue,
    contacts: tuple[list[str], list[str]],
    n_users: int,
    n_items: int,
    rate: float,
) -> list[tuple[np.ndarray, str, str, str]]:
    """Write the defects into the log in place; return what was chosen, per search."""
    d = _SearchDefects(is_bot.copy(), [], rng)
    k = parts._defect_count(rate, int((~is_bot).sum()))
    everyone = np.arange(len(log))

    rows = d.pick(everyone[log.depth > 0], k)
    log.item[rows] = n_items + log.item[rows]
    d.chosen.append((rows, "unknown_item", "item_id", "quarantine"))

    rows = d.pick(everyone, k)
    emails, phones = contacts
    for i in rows:
        who = int(log.user[i]) if 0 <= log.user[i] < n_users else int(rng.integers(0, len(emails)))
        form = int(rng.integers(0, 4))
        clean_part = log.query[i] if log.query[i] is not None else ""
        text = (emails[who], f"{clean_part} {emails[who]}", phones[who], f"order {phones[who]}")[form]
        log.query[i] = text
        log.clean[i] = normalise(_redact(text))
    d.chosen.append((rows, "pii_in_query", "query", "repair"))

    rows = d.pick(everyone, k)
    for i in rows:
        base = log.query[i] or "mug"
        if rng.random() < 0.5:
            text = HTML_FORMS[int(rng.integers(0, len(HTML_FORMS)))].format(q=base)
        else:
            text = base.rstrip() + SQL_TAILS[int(rng.integers(0, len(SQL_TAILS)))]
        log.query[i] = text
        log.clean[i] = normalise(base)
    d.chosen.append((rows, "markup_in_query", "query", "repair"))

    rows = d.pick(everyone, k)
    for i in rows:
        log.query[i] = ("", "   ", None)[int(rng.integers(0, 3))]
        log.clean[i] = None
    d.chosen.append((rows, "empty_query", "query", "quarantine"))

    rows = d.pick(everyone, k)
    for i in rows:
        item = int(log.item[i]) if 0 <= log.item[i] < n_items else int(rng.integers(0, len(cat.descriptions)))
        description = cat.descriptions[item]
        target = int(rng.integers(520, 2001))
        text = (description + " ") * (target // (len(description) + 1) + 1)
        log.query[i] = text[:target].strip() + "."
        log.clean[i] = None
    d.chosen.append((rows, "oversized_query", "query", "quarantine"))

    d.chosen.append((np.flatnonzero(is_bot), "bot_traffic", "user_id", "quarantine"))
    return d.chosen


@dataclass(frozen=True)
class SearchLog:
    """What generate writes: the raw table, its defects (in demo_parts' form), the query truth, stats."""

    table: pa.Table
    defects: parts._Defects
    clean_queries: pa.Table
    stats: dict


def searches(
    seed: int,
    cat: parts._Catalogue,
    users: parts._Users,
    steps: parts.Steps,
    contacts: tuple[list[str], list[str]],
    start_s: int,
    end_s: int,
    rate: float,
    widths: dict[str, int],
) -> SearchLog:
    """The search log of the shop. Its own random stream (from the seed), so the other files do not move."""
    rng = np.random.default_rng([seed, 10])
    describer = _Describer(cat)
    n_users, n_items = len(users.signup_s), len(cat.titles)
    days = (end_s - start_s) // parts.DAY
    known = _known_searches(rng, describer, users, cat, steps)
    n_anonymous = round(len(known) * ANONYMOUS_SHARE / (1 - ANONYMOUS_SHARE))
    anonymous = _anonymous_searches(rng, describer, cat, n_anonymous, start_s, end_s)
    real = len(known) + len(anonymous)
    n_bot = 0 if rate <= 0 else min(BOT_MAX_SEARCHES, max(BOT_MIN_SEARCHES, round(BOT_SHARE * real)))
    bot = _bot_searches(rng, describer, n_bot, n_users, start_s, days)
    log = _concat([known, anonymous, bot])
    log = _take(log, np.lexsort((log.item, log.user, log.ts)))
    is_bot = log.user == n_users
    clean_before = list(log.clean)
    chosen = _inject(rng, log, is_bot, cat, contacts, n_users, n_items, rate) if rate > 0 else []

    # One row per interaction: a `none` row, or click [, cart [, purchase]].
    n_rows_of = np.maximum(1, log.depth)
    search_of_row = np.repeat(np.arange(len(log)), n_rows_of)
    first_row = np.cumsum(n_rows_of) - n_rows_of
    step = 1 + np.arange(len(search_of_row)) - first_row[search_of_row]
    action = np.where(log.depth[search_of_row] == 0, 0, step)
    id_width = parts._id_width(7, len(log))
    table = pa.table(
        {
            "search_id": parts._ids("S", search_of_row + 1, id_width),
            "user_id": parts._ids("U", log.user[search_of_row], widths["user"]),
            "query": pa.array([log.query[i] for i in search_of_row], pa.string()),
            "searched_at": parts._timestamps(log.ts[search_of_row]),
            "item_id": parts._ids("I", np.where(action == 0, -1, log.item[search_of_row]), widths["item"]),
            "action": parts._pick_from(ACTIONS, action),
            "position": parts._integers(np.where(action == 0, -1, log.position[search_of_row])),
        }
    )
    defects = parts._Defects.new("searches", len(search_of_row), rng)
    for chosen_searches, defect, column, expected in chosen:
        rows = np.flatnonzero(np.isin(search_of_row, chosen_searches))
        if len(rows):
            defects.truth.append((rows, defect, column, expected))
    keep = np.array([log.clean[i] is not None for i in search_of_row], dtype=bool)
    clean_queries = pa.table(
        {
            "row_number": pa.array(np.flatnonzero(keep), pa.int64()),
            "search_id": table["search_id"].filter(pa.array(keep)).combine_chunks(),
            "clean_query": pa.array([log.clean[i] for i in search_of_row[keep]], pa.string()),
        }
    )
    stats = _stats(log, is_bot, clean_before, action, n_users, n_anonymous)
    return SearchLog(table, defects, clean_queries, stats)


def _stats(
    log: _Log, is_bot: np.ndarray, clean: list[str | None], action: np.ndarray, n_users: int, n_anonymous: int
) -> dict:
    """The summary's account of the log: sizes, head coverage, how far the bot is from everyone else."""
    real = np.flatnonzero(~is_bot)
    counts: dict[str, int] = {}
    for i in real:
        counts[clean[i]] = counts.get(clean[i], 0) + 1
    ranked = sorted(counts.values(), reverse=True)
    known = real[log.user[real] >= 0]
    per_day = np.unique(log.user[known] * 100_000 + log.ts[known] // parts.DAY, return_counts=True)[1]
    # The most searches of one shopper in any 24 hours: per search, the same shopper's searches in the
    # next 24 hours (the key orders by shopper, then time).
    key = np.sort(log.user[known] * 10**12 + log.ts[known])
    in_a_day = np.searchsorted(key, key + parts.DAY, side="left") - np.arange(len(key))
    bot_days = np.unique(log.ts[is_bot] // parts.DAY)
    return {
        "searches": len(log),
        "rows": len(action),
        "rows_by_action": {a: int((action == j).sum()) for j, a in enumerate(ACTIONS)},
        "anonymous_searches": n_anonymous,
        "distinct_queries": len(counts),
        "head_share": {f"top_{n}": round(sum(ranked[:n]) / max(1, len(real)), 4) for n in HEAD_SIZES},
        "max_searches_per_shopper_day": int(per_day.max(initial=0)),
        "max_searches_per_shopper_24h": int(in_a_day.max(initial=0)),
        "bot": {
            "user_id_number": n_users if is_bot.any() else None,
            "searches": int(is_bot.sum()),
            "calendar_days": len(bot_days),
        },
    }
