"""Real time on the feature server: `POST /events` records a shopper's event in their live session, and
`POST /recommend` re-ranks their published candidates with that session, in milliseconds.

Both routes are added to Feast's own FastAPI app (scoring/serving/server.py), beside `/get-online-features`
and `/search`, and share its online store: a session lives in Feast's stream feature view
`user_session_activity` (feature_repo/, generated from dbt's fct_user_session_activity), whose push source
`session_activity_push` a build fills from the mart and `/events` (or Feast's own `/push`) keeps current.

`POST /events` (a write route: the guard wants the bearer token, a read-only server answers 403) takes
`{"user_id": str, "item_id": str, "event_type": "view" | "cart" | "purchase", "event_at"?: ISO-8601}`
(`event_at` defaults to now; without an offset it is UTC; kept to the second). The user's current online
row is read, the event merged into it with the mart's own rule (each item once per kind at its latest
time, newest first; entries older than `settings.session_window_hours` before the session's last event
dropped), and the merged row pushed online to the push source's view (`push_online`: the write of
Feast's `FeatureStore.push(..., PushMode.ONLINE)`, without its uncached registry re-read): one SQLite
transaction, so a reader sees the old row or the new one. The answer (200) is the stored row. A check
that fails answers before anything is read or written:

- 400 when the body is not JSON at all (empty, not UTF-8, malformed, NaN/Infinity);
- 422 when it is not an event: not an object, an unknown field, a missing one, a wrong type, an empty id,
  an event type other than the three, a time that is not ISO-8601 or more than
  `settings.events_max_future_s` ahead of the server's clock, an item not in the catalogue (the live
  dim_items and the promoted run's items);
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

import json
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from scoring.serving.reloading import ReloadingService
from scoring.serving.server import RequestProblem, _NonFiniteNumber, _reject_constant, _shown
from scoring.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

EVENTS = ("POST", "/events")
RECOMMEND = ("POST", "/recommend")
EVENT_FIELDS = ("user_id", "item_id", "event_type", "event_at")
RECOMMEND_FIELDS = ("user_id", "k")
EVENT_EXAMPLE = '{"user_id": "U000001", "item_id": "I00042", "event_type": "view"}'
RECOMMEND_EXAMPLE = '{"user_id": "U000001", "k": 10}'
MAX_ID_CHARS = 128
# An event type -> the session lists it lands in (the mart's columns: <kind>_item_ids, <kind>_at).
KINDS = {"view": "viewed", "cart": "carted", "purchase": "bought"}
SESSION_VIEW = "user_session_activity"
PUSH_SOURCE = "session_activity_push"
SESSION_COLUMNS = tuple(f"{kind}_{suffix}" for kind in KINDS.values() for suffix in ("item_ids", "at"))
SESSION_FEATURES = [f"{SESSION_VIEW}:{name}" for name in (*SESSION_COLUMNS, "last_event_at")]
PUBLISHED_FEATURES = [f"user_recommendations:{name}" for name in ("item_ids", "scores", "reasons", "run_id")]

logger = logging.getLogger("aisle.serving.recommend")
# Feast warns that stream feature views are alpha each time it reads one from the registry (every
# registry refresh); Aisle uses only their push path, so the warning would only fill the server's log.
warnings.filterwarnings("ignore", "Stream feature views are experimental", RuntimeWarning)


# --- requests --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """A checked event: who, which item, what kind, when (UTC, to the second)."""

    user_id: str
    item_id: str
    event_type: str
    event_at: datetime


@dataclass(frozen=True)
class RecommendRequest:
    user_id: str
    k: int


def _payload(body: bytes, fields: Sequence[str], example: str) -> dict[str, Any]:
    """The JSON object in `body` (400 when it is not JSON, 422 when not an object or a field is unknown)."""
    if not body.strip():
        raise RequestProblem(400, f"the body is empty: send a JSON object such as {example}")
    try:
        payload = json.loads(body.decode("utf-8-sig"), parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise RequestProblem(
            400, f"the body is not UTF-8 text (byte 0x{body[error.start]:02x} at offset {error.start})"
        ) from None
    except _NonFiniteNumber as error:
        raise RequestProblem(400, f"{error} is not a JSON number: send finite numbers") from None
    except (ValueError, RecursionError) as error:
        raise RequestProblem(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise RequestProblem(422, f"the body must be a JSON object such as {example}, not {_shown(payload)}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise RequestProblem(422, f"unknown field {_shown(unknown[0])}: the fields are {', '.join(fields)}")
    return payload


def _identifier(payload: dict[str, Any], name: str, example: str) -> str:
    if name not in payload:
        raise RequestProblem(422, f"`{name}` is missing: send it as in {example}")
    value = payload[name]
    if not isinstance(value, str):
        raise RequestProblem(422, f"`{name}` must be a string, not {_shown(value)}")
    value = value.strip()
    if not value:
        raise RequestProblem(422, f"`{name}` is empty")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise RequestProblem(
            422, f"`{name}` must be at most {MAX_ID_CHARS} printable characters, not {_shown(value)}"
        )
    return value


def parse_event(body: bytes, now: datetime, max_future_s: float) -> Event:
    """The event in `body`, or RequestProblem (400 unreadable, 422 not a valid event) saying why."""
    payload = _payload(body, EVENT_FIELDS, EVENT_EXAMPLE)
    user_id = _identifier(payload, "user_id", EVENT_EXAMPLE)
    item_id = _identifier(payload, "item_id", EVENT_EXAMPLE)
    event_type = payload.get("event_type")
    if event_type not in KINDS:
        raise RequestProblem(
            422, f"`event_type` must be one of {', '.join(map(repr, KINDS))}, not {_shown(event_type)}"
        )
    event_at = payload.get("event_at")
    if event_at is None:
        when = now
    elif not isinstance(event_at, str):
        raise RequestProblem(
            422, f'`event_at` must be an ISO-8601 time such as "2026-11-30T10:15:00Z", not {_shown(event_at)}'
        )
    else:
        try:
            when = datetime.fromisoformat(event_at.strip())
        except ValueError:
            raise RequestProblem(
                422, f'`event_at` {_shown(event_at)} is not an ISO-8601 time such as "2026-11-30T10:15:00Z"'
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
    return Event(user_id, item_id, event_type, when.replace(microsecond=0))


def parse_recommend(body: bytes, max_k: int, default_k: int) -> RecommendRequest:
    """The request in `body`, or RequestProblem (400 unreadable, 422 not a valid request) saying why."""
    payload = _payload(body, RECOMMEND_FIELDS, RECOMMEND_EXAMPLE)
    user_id = _identifier(payload, "user_id", RECOMMEND_EXAMPLE)
    k = payload.get("k")
    if k is None:
        k = min(default_k, max_k)
    elif not (isinstance(k, int) and not isinstance(k, bool)) or not 1 <= k <= max_k:
        raise RequestProblem(
            422, f"`k` must be a whole number from 1 to {max_k} (AISLE_RECOMMEND_MAX_K), not {_shown(k)}"
        )
    return RecommendRequest(user_id, k)


# --- sessions --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Session:
    """A user's session activity: per kind (viewed, carted, bought) the items, newest first, each with the
    unix time of its latest such event; and the time of the last event (None: no session)."""

    entries: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    last_event_at: int | None = None

    def items(self, kind: str) -> list[str]:
        return [item for item, _ in self.entries.get(kind, ())]

    @property
    def empty(self) -> bool:
        return not any(self.entries.values())

    @classmethod
    def from_online(cls, row: dict[str, Any]) -> Session:
        """The session in one entity row of Feast's online answer (all None when the user has none)."""
        if row.get("last_event_at") is None:
            return cls()
        entries = {
            kind: tuple(zip(row.get(f"{kind}_item_ids") or [], row.get(f"{kind}_at") or [], strict=True))
            for kind in KINDS.values()
        }
        return cls(entries, int(row["last_event_at"]))

    def merged(self, event: Event, window_s: int) -> Session:
        """This session with `event` in it, by fct_user_session_activity's rule: the session ends at its
        latest event; each item appears once per kind at its latest time; entries more than `window_s`
        before the end are dropped; newest first (ties by item id)."""
        at = int(event.event_at.timestamp())
        last = at if self.last_event_at is None else max(self.last_event_at, at)
        entries = {}
        for kind in KINDS.values():
            times = dict(self.entries.get(kind, ()))
            if kind == KINDS[event.event_type]:
                times[event.item_id] = max(times.get(event.item_id, at), at)
            kept = [(item, t) for item, t in times.items() if t >= last - window_s]
            entries[kind] = tuple(sorted(kept, key=lambda entry: (-entry[1], entry[0])))
        return Session(entries, last)

    def live(self, now: datetime, window_s: int) -> Session:
        """The entries still within the window of `now` (the view's TTL, applied here)."""
        cutoff = now.timestamp() - window_s
        return Session(
            {kind: tuple(e for e in entries if e[1] >= cutoff) for kind, entries in self.entries.items()},
            self.last_event_at,
        )

    def frame(self, user_id: str) -> pd.DataFrame:
        """The session as the one-row frame pushed to `session_activity_push` (the mart's columns)."""
        assert self.last_event_at is not None
        row: dict[str, Any] = {
            "user_id": user_id,
            "event_timestamp": pd.Timestamp(self.last_event_at, unit="s", tz="UTC"),
            "last_event_at": self.last_event_at,
        }
        for kind in KINDS.values():
            row[f"{kind}_item_ids"] = self.items(kind)
            row[f"{kind}_at"] = [int(t) for _, t in self.entries.get(kind, ())]
        return pd.DataFrame([row])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{kind}_item_ids": self.items(kind) for kind in KINDS.values()}
        out["last_event_at"] = (
            None
            if self.last_event_at is None
            else datetime.fromtimestamp(self.last_event_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        return out


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


def _online_row(store: FeatureStore, features: list[str], user_id: str) -> dict[str, Any]:
    answer = store.get_online_features(features=features, entity_rows=[{"user_id": user_id}]).to_dict()
    return {name: values[0] for name, values in answer.items()}


def push_online(store: FeatureStore, frame: pd.DataFrame) -> None:
    """`FeatureStore.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)` without its last step.

    Feast's push writes the frame online to every view the push source feeds (here one, so one SQLite
    transaction), then re-reads the whole registry from disk, uncached, to refresh precomputed feature
    services, which Aisle does not define: ~50 ms of a ~60 ms event, measured on the tiny shop. So the
    route finds the push source's views in the cached registry and writes to them itself.
    """
    views = [
        view.name
        for view in store.list_stream_feature_views(allow_cache=True)
        if view.stream_source is not None and view.stream_source.name == PUSH_SOURCE
    ]
    if not views:
        raise RuntimeError(f"no feature view is fed by the push source {PUSH_SOURCE} (run `feast apply`)")
    for view in views:
        store.write_to_online_store(view, frame, allow_registry_cache=True)


def record_event(store: FeatureStore, state: RecommendState, event: Event, window_s: int) -> Session:
    """Merge `event` into the user's online session and push the merged row (one online write)."""
    if event.item_id not in state.catalogue:
        raise RequestProblem(
            422, f"`item_id` {_shown(event.item_id)} is not in the catalogue (run {state.run_id}'s items)"
        )
    session = Session.from_online(_online_row(store, SESSION_FEATURES, event.user_id)).merged(event, window_s)
    push_online(store, session.frame(event.user_id))
    return session


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
    online = _online_row(store, features, wanted.user_id)
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
    policy = RerankPolicy.from_settings(settings)
    window_s = int(timedelta(hours=settings.session_window_hours).total_seconds())

    def answer(error: RequestProblem) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    async def events(request: Request) -> Response:
        # Synchronous SQLite reads and one write on the worker's loop: ~1 ms, less than a thread hand-off.
        try:
            event = parse_event(await request.body(), _now(), settings.events_max_future_s)
            session = record_event(store, service.current(), event, window_s)
        except RequestProblem as problem:
            return answer(problem)
        except Exception as error:
            logger.exception("POST /events failed")
            return JSONResponse({"detail": f"the event was not stored: {type(error).__name__}: {error}"}, 500)
        stored = {
            "user_id": event.user_id,
            "item_id": event.item_id,
            "event_type": event.event_type,
            "event_at": event.event_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
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
