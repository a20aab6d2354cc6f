"""Real time on the feature server: `POST /events` records a shopper's event in their live session, and
`POST /recommend` re-ranks their published candidates with that session, in milliseconds.

Both routes are added to Feast's own FastAPI app (scoring/serving/server.py), beside `/get-online-features`
and `/search`, and share its online store: a session lives in Feast's stream feature view
`user_session_activity` (feature_repo/, generated from dbt's fct_user_session_activity), whose push source
`session_activity_push` a build fills from the mart and `/events` (or Feast's own `/push`) keeps current.

`POST /events` (a write route: the guard wants the bearer token, a read-only server answers 403) takes
`{"user_id": str, "item_id": str, "event_type": "view" | "cart" | "purchase", "event_at"?: ISO-8601,
"event_id"?: str, "quantity"?: int, "unit_price"?: number, "order_id"?: str}` (`event_at` defaults to now;
without an offset it is UTC; kept to the second). `event_id` is the client's idempotency key (Segment's
`messageId`): an event sent again with the same id and values, a retry, is stored and counted once; the same
id with other values is refused with 409. Without one, every request is a new event. `quantity`,
`unit_price` and `order_id` describe a purchase line (a cart or purchase counts one unit by default, a
purchase without an order is an order of its own), as the raw events contract has them.

An accepted event is stored in the event log (scoring/events/log.py: SQLite, synced to disk at commit) and
merged into the user's online session (scoring/events/session.py: the mart's own rule, one online write) in
one write transaction of the log, which every worker and build serialises on: two events of one user never
overwrite each other's merge, and the answer (200) comes only once the event is on disk. The next build
seals the log into the raw folder (`events-YYYY-MM-DD.served-<first>-<last>.<ext>`), so the warehouse,
the marts, the next training run and the sessions a build reloads all hold it. The answer says what was
stored: `{"stored": {the event, "event_id", "log": {"path", "seq", "duplicate"}, "session": the view},
"session": the merged session}`. A check that fails answers before anything is read or written:

- 400 when the body is not JSON at all (empty, not UTF-8, malformed, NaN/Infinity);
- 422 when it is not an event: not an object, an unknown field, a missing one, a wrong type, an empty id,
  an event type other than the three, a time that is not ISO-8601 or more than
  `settings.events_max_future_s` ahead of the server's clock, an item not in the catalogue (the live
  dim_items and the promoted run's items), a quantity or price out of range;
- 409 for an `event_id` already stored with other values;
- 413 over `settings.max_request_bytes` (the guard), 401/403 without the token (the guard);
- 503 until a run is published (the catalogue check needs it).

`POST /recommend` takes `{"user_id": str, "k"?: int}` (`k` 1..`settings.recommend_max_k`, default
`settings.top_n`) and answers `{user_id, k, items: [{item_id, score, reason}], answered_from, run_id}`:

- `session`: the user's published candidates (published/candidates.parquet, the ranker's best
  `settings.serve_candidates`) re-ranked by `rerank` with their live session;
- `published`: the same candidates in the ranker's order (no live session), or, for a user without
  candidates, their published list from Feast's `user_recommendations`;
- `popular`: a user with neither gets the items most sold in the last 30 days (the latest fct_item_stats
  snapshot), re-ranked by a live session when they have one.

`score` is what the items are ordered by: the ranker's score (`published`), the units sold (`popular`),
or `rerank`'s score when a live session re-ranked them. A published list from Feast carries no repeat
figures, so there every item bought in the session leaves.

A session counts while its entries are within `settings.session_window_hours` of now (the view's TTL;
Feast's SQLite online read does not apply TTLs, so this route does). Each worker loads the candidates,
the promoted run's item embeddings, titles, the catalogue and the popular list once, as arrays keyed by
user, and a watcher thread reloads them when a publication changes them (every
`settings.search_reload_interval_s`), so a request does one online read and one small matrix product
(candidates x session items).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from scoring.events.log import EventConflict, EventLog, Receipt
from scoring.events.session import (
    KINDS,
    SESSION_FEATURES,
    SESSION_VIEW,
    Event,
    Session,
    merge_into_session,
    online_row,
)
from scoring.serving.reloading import ReloadingService
from scoring.serving.request_body import RequestProblem, json_object, shown
from scoring.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

EVENTS = ("POST", "/events")
RECOMMEND = ("POST", "/recommend")
EVENT_FIELDS = (
    "user_id",
    "item_id",
    "event_type",
    "event_at",
    "event_id",
    "quantity",
    "unit_price",
    "order_id",
)
RECOMMEND_FIELDS = ("user_id", "k")
EVENT_EXAMPLE = '{"user_id": "U000001", "item_id": "I00042", "event_type": "view"}'
RECOMMEND_EXAMPLE = '{"user_id": "U000001", "k": 10}'
MAX_ID_CHARS = 128
MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = 1_000_000
PUBLISHED_FEATURES = [f"user_recommendations:{name}" for name in ("item_ids", "scores", "reasons", "run_id")]

logger = logging.getLogger("aisle.serving.recommend")
# Feast warns that stream feature views are alpha each time it reads one from the registry (every
# registry refresh); Aisle uses only their push path, so the warning would only fill the server's log.
warnings.filterwarnings("ignore", "Stream feature views are experimental", RuntimeWarning)


# --- requests --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecommendRequest:
    user_id: str
    k: int


def _identifier(payload: dict[str, Any], name: str, example: str) -> str:
    if name not in payload:
        raise RequestProblem(422, f"`{name}` is missing: send it as in {example}")
    value = payload[name]
    if not isinstance(value, str):
        raise RequestProblem(422, f"`{name}` must be a string, not {shown(value)}")
    value = value.strip()
    if not value:
        raise RequestProblem(422, f"`{name}` is empty")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise RequestProblem(
            422, f"`{name}` must be at most {MAX_ID_CHARS} printable characters, not {shown(value)}"
        )
    return value


def _optional_identifier(payload: dict[str, Any], name: str) -> str | None:
    return None if payload.get(name) is None else _identifier(payload, name, EVENT_EXAMPLE)


def _quantity(payload: dict[str, Any]) -> int | None:
    value = payload.get("quantity")
    if value is None:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool)) or not 1 <= value <= MAX_QUANTITY:
        raise RequestProblem(
            422, f"`quantity` must be a whole number from 1 to {MAX_QUANTITY:,}, not {shown(value)}"
        )
    return value


def _unit_price(payload: dict[str, Any]) -> str | None:
    """The price as the raw contract's text, with two places."""
    value = payload.get("unit_price")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_UNIT_PRICE:
        raise RequestProblem(
            422, f"`unit_price` must be a number above 0 and at most {MAX_UNIT_PRICE:,}, not {shown(value)}"
        )
    return f"{value:.2f}"


def parse_event(body: bytes, now: datetime, max_future_s: float) -> Event:
    """The event in `body`, or RequestProblem (400 unreadable, 422 not a valid event) saying why."""
    payload = json_object(body, EVENT_FIELDS, EVENT_EXAMPLE)
    user_id = _identifier(payload, "user_id", EVENT_EXAMPLE)
    item_id = _identifier(payload, "item_id", EVENT_EXAMPLE)
    event_type = payload.get("event_type")
    if event_type not in KINDS:
        raise RequestProblem(
            422, f"`event_type` must be one of {', '.join(map(repr, KINDS))}, not {shown(event_type)}"
        )
    event_at = payload.get("event_at")
    if event_at is None:
        when = now
    elif not isinstance(event_at, str):
        raise RequestProblem(
            422, f'`event_at` must be an ISO-8601 time such as "2026-11-30T10:15:00Z", not {shown(event_at)}'
        )
    else:
        try:
            when = datetime.fromisoformat(event_at.strip())
        except ValueError:
            raise RequestProblem(
                422, f'`event_at` {shown(event_at)} is not an ISO-8601 time such as "2026-11-30T10:15:00Z"'
            ) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        ahead = (when - now).total_seconds()
        if ahead > max_future_s:
            raise RequestProblem(
                422,
                f"`event_at` {event_at} is {ahead:,.0f} s ahead of the server's clock "
                f"({now:%Y-%m-%dT%H:%M:%SZ}); "
                f"at most {max_future_s:g} s of skew is allowed (AISLE_EVENTS_MAX_FUTURE_S)",
            )
    return Event(
        user_id,
        item_id,
        event_type,
        when.replace(microsecond=0),
        event_id=_optional_identifier(payload, "event_id"),
        quantity=_quantity(payload),
        unit_price=_unit_price(payload),
        order_id=_optional_identifier(payload, "order_id"),
    )


def parse_recommend(body: bytes, max_k: int, default_k: int) -> RecommendRequest:
    """The request in `body`, or RequestProblem (400 unreadable, 422 not a valid request) saying why."""
    payload = json_object(body, RECOMMEND_FIELDS, RECOMMEND_EXAMPLE)
    user_id = _identifier(payload, "user_id", RECOMMEND_EXAMPLE)
    k = payload.get("k")
    if k is None:
        k = min(default_k, max_k)
    elif not (isinstance(k, int) and not isinstance(k, bool)) or not 1 <= k <= max_k:
        raise RequestProblem(
            422, f"`k` must be a whole number from 1 to {max_k} (AISLE_RECOMMEND_MAX_K), not {shown(k)}"
        )
    return RecommendRequest(user_id, k)


# --- the re-rank -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RerankPolicy:
    """The settings of `rerank` (scoring/settings.py: session_view_weight, session_cart_weight,
    session_rebuy_min_repeat)."""

    view_weight: float
    cart_weight: float
    rebuy_min_repeat: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RerankPolicy:
        return cls(
            settings.session_view_weight, settings.session_cart_weight, settings.session_rebuy_min_repeat
        )


@dataclass(frozen=True)
class Reranked:
    """One answer row: the pool position it came from, its new score, and why it moved (None: it did not
    move up; `viewed`/`carted`: a similar item was, `related_to` names it)."""

    position: int
    score: float
    moved_by: str | None = None
    related_to: str | None = None


def _above_median(similarity: np.ndarray) -> np.ndarray:
    """How far each similarity stands above the pool's median one (0 at or below it)."""
    if not len(similarity):
        return similarity
    return np.clip(similarity - np.median(similarity), 0.0, None)


def rerank(
    times_bought: np.ndarray,
    repeat: np.ndarray,
    bought: np.ndarray,
    viewed_similarity: np.ndarray,
    carted_similarity: np.ndarray,
    policy: RerankPolicy,
    viewed_nearest: Sequence[str | None] | None = None,
    carted_nearest: Sequence[str | None] | None = None,
) -> list[Reranked]:
    """A pool (the ranker's best first) re-ranked with a live session.

    - An item bought in the session (`bought`) leaves, unless it is a repeat the ranker expects: the user
      had bought it before the session (`times_bought` > 0) and the repeat source scores it at least
      `policy.rebuy_min_repeat`.
    - Every other item scores its ranker position, 1 for the first down to 1/n for the last, plus
      `policy.view_weight` times how far its best cosine similarity to an item viewed in the session
      stands above the pool's median one, and `policy.cart_weight` times the same for the items carted
      (below the median counts 0). Sentence embeddings of one shop's titles are all fairly alike (a
      median cosine of about 0.7 on the demo shop), so only the margin says "related": an item 0.25
      above the median for a carted item gains 0.2 of the list, and one of typical similarity gains
      nothing. With no session the order is the ranker's. Ties keep the ranker's order.
    - An item that ends above its ranker position says which session item moved it (the kind whose
      weighted similarity was larger).
    """
    n = len(times_bought)
    viewed = policy.view_weight * _above_median(viewed_similarity)
    carted = policy.cart_weight * _above_median(carted_similarity)
    score = 1.0 - np.arange(n) / max(n, 1) + viewed + carted
    expected_repeat = (times_bought > 0) & (repeat >= policy.rebuy_min_repeat)
    kept = np.flatnonzero(~bought | expected_repeat)
    order = kept[np.argsort(-score[kept], kind="stable")]
    answer = []
    for new_position, position in enumerate(order):
        moved_by = related = None
        if kept.searchsorted(position) > new_position:  # above where the ranker had it among the kept
            if carted[position] >= viewed[position] and carted_nearest is not None:
                moved_by, related = "carted", carted_nearest[position]
            elif viewed_nearest is not None:
                moved_by, related = "viewed", viewed_nearest[position]
        answer.append(Reranked(int(position), float(score[position]), moved_by, related))
    return answer


# --- per-worker state ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """A user's published candidates, the ranker's best first."""

    item_ids: np.ndarray
    scores: np.ndarray
    repeat: np.ndarray
    times_bought: np.ndarray
    reasons: np.ndarray


@dataclass
class RecommendState:
    """What one worker answers from, loaded from a publication and the promoted run."""

    run_id: str
    pools: dict[str, Pool]
    vectors: np.ndarray  # the run's item embeddings, L2-normalised, one row per item
    item_rows: dict[str, int]
    titles: dict[str, str]
    catalogue: frozenset[str]
    popular: Pool
    signature: tuple

    def similarity(
        self, item_ids: np.ndarray, session_items: list[str]
    ) -> tuple[np.ndarray, list[str | None]]:
        """Each item's best cosine similarity to the session items (0 when either has no embedding), and
        which session item it was."""
        known = [item for item in session_items if item in self.item_rows]
        if not known:
            return np.zeros(len(item_ids)), [None] * len(item_ids)
        rows = np.array([self.item_rows.get(item, -1) for item in item_ids])
        session = self.vectors[[self.item_rows[item] for item in known]]
        sims = self.vectors[np.maximum(rows, 0)] @ session.T
        sims[rows < 0] = 0.0
        best = sims.argmax(axis=1)
        return sims.max(axis=1), [known[i] for i in best]


def _signature(paths: Sequence[Path]) -> tuple:
    return tuple((str(p.resolve()), p.stat().st_mtime_ns) if p.exists() else (str(p), None) for p in paths)


def _paths(settings: Settings) -> list[Path]:
    current = settings.runs_dir / "current"
    return [
        settings.published_dir / "candidates.parquet",
        settings.published_recommendations,
        current / "items.parquet",
        current / "item_embeddings.npy",
        settings.marts_dir / "dim_items.parquet",
        settings.marts_dir / "fct_item_stats.parquet",
    ]


def _pools(candidates: pd.DataFrame, reasons: pd.DataFrame) -> dict[str, Pool]:
    """Per user the candidates' arrays, ranker's best first, with the published reason where the
    published lists have one."""
    frame = candidates.merge(reasons, on=["user_id", "item_id"], how="left").sort_values(["user_id", "rank"])
    frame["reason"] = frame["reason"].fillna("")
    users = frame["user_id"].to_numpy()
    if not len(users):
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = [*starts[1:], len(users)]
    columns = {
        "item_ids": frame["item_id"].to_numpy(dtype=object),
        "scores": frame["score"].to_numpy(dtype=float),
        "repeat": frame["repeat"].fillna(0).to_numpy(dtype=float),
        "times_bought": frame["times_bought"].fillna(0).to_numpy(dtype=np.int64),
        "reasons": frame["reason"].to_numpy(dtype=object),
    }
    return {
        users[start]: Pool(**{name: values[start:end] for name, values in columns.items()})
        for start, end in zip(starts, bounds, strict=True)
    }


def load_state(settings: Settings) -> RecommendState:
    """Load a worker's state from the publication and the promoted run (FileNotFoundError before one)."""
    paths = _paths(settings)
    signature = _signature(paths)
    candidates_path, recommendations_path, items_path, embeddings_path, dim_items_path, item_stats_path = (
        paths
    )
    items = pd.read_parquet(items_path, columns=["item_id"])["item_id"].astype(str).tolist()
    vectors = np.load(embeddings_path).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    dim_items = pd.read_parquet(dim_items_path, columns=["item_id", "title"])
    titles = dict(
        zip(dim_items["item_id"].astype(str), dim_items["title"].fillna("").astype(str), strict=True)
    )
    if candidates_path.exists():
        candidates = pd.read_parquet(candidates_path)
    else:  # a publication from before candidates were published: answers come from the published lists
        candidates = pd.DataFrame(
            columns=["user_id", "item_id", "rank", "score", "repeat", "times_bought", "run_id"]
        )
    reasons = pd.DataFrame(columns=["user_id", "item_id", "reason"])
    if recommendations_path.exists():
        published = pd.read_parquet(recommendations_path, columns=["user_id", "item_id", "list", "reason"])
        reasons = published[published["list"] == "top"][["user_id", "item_id", "reason"]]
    stats = pd.read_parquet(
        item_stats_path, columns=["item_id", "event_timestamp", "units_30d", "distinct_buyers"]
    )
    latest = stats.sort_values("event_timestamp").groupby("item_id").tail(1)
    latest = latest[latest["item_id"].isin(set(items))]
    latest = latest.sort_values(["units_30d", "distinct_buyers", "item_id"], ascending=[False, False, True])
    count = len(latest)
    popular = Pool(
        item_ids=latest["item_id"].to_numpy(dtype=object),
        scores=latest["units_30d"].to_numpy(dtype=float),
        repeat=np.zeros(count),
        times_bought=np.zeros(count, dtype=np.int64),
        reasons=np.array(
            [f"Popular: {int(units)} sold in the last 30 days" for units in latest["units_30d"]], dtype=object
        ),
    )
    run_id = (
        str(candidates["run_id"].iloc[0])
        if len(candidates)
        else (settings.runs_dir / "current").resolve().name
    )
    return RecommendState(
        run_id=run_id,
        pools=_pools(candidates, reasons),
        vectors=vectors,
        item_rows={item: row for row, item in enumerate(items)},
        titles=titles,
        catalogue=frozenset(items) | frozenset(titles),
        popular=popular,
        signature=signature,
    )


class RecommendService(ReloadingService[RecommendState]):
    """One worker's candidate pools, reloaded when a publication changes the files they are read from."""

    what = "recommendations"
    unavailable = "recommendations are not available"

    def load(self) -> RecommendState:
        return load_state(self.settings)

    def reloaded(self, value: RecommendState) -> RecommendState | None:
        if not (self.settings.runs_dir / "current").exists():
            return None
        if value.signature == _signature(_paths(self.settings)):
            return None
        return load_state(self.settings)

    def describe(self, value: RecommendState) -> str:
        return f"{value.run_id}, {len(value.pools)} users"


# --- the routes ------------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def record_event(
    log: EventLog, store: FeatureStore, state: RecommendState, event: Event, window_s: int
) -> tuple[Receipt, Session]:
    """Store `event` in the log and merge it into the user's online session, in one write transaction of
    the log (scoring/events/log.py): atomic per user across workers, on disk before the answer."""
    if event.item_id not in state.catalogue:
        raise RequestProblem(
            422, f"`item_id` {shown(event.item_id)} is not in the catalogue (run {state.run_id}'s items)"
        )
    try:
        return log.record(event, lambda: merge_into_session(store, event, window_s))
    except EventConflict as conflict:
        raise RequestProblem(409, str(conflict)) from None


def _reason(state: RecommendState, pool: Pool, row: Reranked) -> str:
    if row.moved_by is not None and row.related_to is not None:
        title = state.titles.get(row.related_to) or row.related_to
        verb = "put in your basket" if row.moved_by == "carted" else "just viewed"
        return f"Like {title}, which you {verb}"
    reason = pool.reasons[row.position]
    if reason:
        return str(reason)
    bought = int(pool.times_bought[row.position])
    if bought:
        return f"You bought this {bought} time{'s' if bought > 1 else ''}"
    return "Picked for you"


def recommend(
    store: FeatureStore, state: RecommendState, wanted: RecommendRequest, policy: RerankPolicy, window_s: int
) -> dict[str, Any]:
    """The answer to one `/recommend` (see the module docstring for the three paths)."""
    pool = state.pools.get(wanted.user_id)
    features = SESSION_FEATURES if pool is not None else SESSION_FEATURES + PUBLISHED_FEATURES
    online = online_row(store, features, wanted.user_id)
    session = Session.from_online(online).live(_now(), window_s)
    run_id = state.run_id
    answered_from = "published"
    if pool is None and online.get("item_ids"):
        count = len(online["item_ids"])
        pool = Pool(
            item_ids=np.array(online["item_ids"], dtype=object),
            scores=np.array(online["scores"], dtype=float),
            repeat=np.zeros(count),
            times_bought=np.zeros(count, dtype=np.int64),
            reasons=np.array(online["reasons"], dtype=object),
        )
        run_id = online.get("run_id") or run_id
    elif pool is None:
        pool, answered_from = state.popular, "popular"
    if session.empty:
        order = [Reranked(i, float(s)) for i, s in enumerate(pool.scores[: wanted.k])]
    else:
        if answered_from == "published":
            answered_from = "session"
        bought = np.isin(pool.item_ids, session.items("bought"))
        viewed, viewed_nearest = state.similarity(pool.item_ids, session.items("viewed"))
        carted, carted_nearest = state.similarity(pool.item_ids, session.items("carted"))
        order = rerank(
            pool.times_bought, pool.repeat, bought, viewed, carted, policy, viewed_nearest, carted_nearest
        )[: wanted.k]
    items = [
        {
            "item_id": str(pool.item_ids[row.position]),
            "score": round(row.score, 6),
            "reason": _reason(state, pool, row),
        }
        for row in order
    ]
    return {
        "user_id": wanted.user_id,
        "k": wanted.k,
        "items": items,
        "answered_from": answered_from,
        "run_id": run_id,
    }


def install(app: FastAPI, settings: Settings, store: FeatureStore) -> RecommendService:
    """Add `/events` and `/recommend` to Feast's app, and load the state in each worker's lifespan."""
    service = RecommendService(settings)
    log = EventLog(settings.event_log_path)
    policy = RerankPolicy.from_settings(settings)
    window_s = settings.session_window_s

    def answer(error: RequestProblem) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    async def events(request: Request) -> Response:
        # Synchronous SQLite writes on the worker's loop: the log's commit waits for the disk, and a thread
        # hand-off would not make it shorter.
        try:
            event = parse_event(await request.body(), _now(), settings.events_max_future_s)
            receipt, session = record_event(log, store, service.current(), event, window_s)
        except RequestProblem as problem:
            return answer(problem)
        except Exception as error:
            logger.exception("POST /events failed")
            return JSONResponse({"detail": f"the event was not stored: {type(error).__name__}: {error}"}, 500)
        stored = {
            "event_id": receipt.event_id,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "event_type": event.event_type,
            "event_at": event.event_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "log": {"path": str(log.path), "seq": receipt.seq, "duplicate": receipt.duplicate},
            "session": SESSION_VIEW,
        }
        return JSONResponse({"stored": stored, "session": session.to_json()})

    async def recommend_route(request: Request) -> Response:
        try:
            wanted = parse_recommend(await request.body(), settings.recommend_max_k, settings.top_n)
            body = recommend(store, service.current(), wanted, policy, window_s)
        except RequestProblem as problem:
            return answer(problem)
        except Exception as error:
            logger.exception("POST /recommend failed")
            return JSONResponse(
                {"detail": f"the recommendation failed: {type(error).__name__}: {error}"}, 500
            )
        return JSONResponse(body)

    app.add_api_route("/events", events, methods=["POST"], include_in_schema=False)
    app.add_api_route("/recommend", recommend_route, methods=["POST"], include_in_schema=False)

    inner_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        service.start()
        try:
            async with inner_lifespan(app) as state:
                yield state
        finally:
            service.stop()

    app.router.lifespan_context = lifespan
    return service
