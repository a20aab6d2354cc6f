"""A shopper's event and their live session: the merge rule, and the session row in Feast's online store.

A session lives in Feast's stream feature view `user_session_activity` (feature_repo/, generated from dbt's
fct_user_session_activity), whose push source `session_activity_push` a build fills from the mart and
`POST /events` keeps current. The merge here is the mart's own rule, so a session merged live equals the
one the next build computes from the same events.

`merge_into_session` is a read-modify-write of one online row: it is atomic per user only under the event
log's write lock (scoring/events/log.py), which every writer of sessions holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore

# An event type -> the session lists it lands in (the mart's columns: <kind>_item_ids, <kind>_at).
KINDS = {"view": "viewed", "cart": "carted", "purchase": "bought"}
SESSION_VIEW = "user_session_activity"
PUSH_SOURCE = "session_activity_push"
SESSION_COLUMNS = tuple(f"{kind}_{suffix}" for kind in KINDS.values() for suffix in ("item_ids", "at"))
SESSION_FEATURES = [f"{SESSION_VIEW}:{name}" for name in (*SESSION_COLUMNS, "last_event_at")]
RAW_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Event:
    """A checked event: who, which item, what kind, when (UTC, to the second); with the client's
    idempotency key (`event_id`, None when it sent none) and a purchase's line (quantity, unit price as
    text with two places, order)."""

    user_id: str
    item_id: str
    event_type: str
    event_at: datetime
    event_id: str | None = None
    quantity: int | None = None
    unit_price: str | None = None
    order_id: str | None = None

    def raw_row(self, event_id: str) -> dict[str, str | None]:
        """The event as a row of the raw events contract (every value text), under `event_id`.

        A cart or purchase without a quantity counts one unit; a purchase without an order is its own
        order (its event id), so each accepted purchase is one order line in fct_order_lines.
        """
        quantity = self.quantity if self.quantity is not None else (None if self.event_type == "view" else 1)
        order_id = self.order_id or (event_id if self.event_type == "purchase" else None)
        return {
            "event_id": event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "event_at": self.event_at.astimezone(UTC).strftime(RAW_TIME),
            "quantity": None if quantity is None else str(quantity),
            "unit_price": self.unit_price,
            "order_id": order_id,
        }

    @classmethod
    def from_raw(cls, row: dict[str, Any]) -> Event:
        """The event of one raw row (`raw_row`'s inverse, the client's event id kept)."""
        return cls(
            user_id=row["user_id"],
            item_id=row["item_id"],
            event_type=row["event_type"],
            event_at=datetime.strptime(row["event_at"], RAW_TIME).replace(tzinfo=UTC),
            event_id=row["event_id"],
            quantity=None if row["quantity"] is None else int(row["quantity"]),
            unit_price=row["unit_price"],
            order_id=row["order_id"],
        )


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
        before the end are dropped; newest first (ties by item id). Merging the same event twice changes
        nothing, so a retried event is harmless to the session."""
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


def online_row(store: FeatureStore, features: list[str], user_id: str) -> dict[str, Any]:
    """One user's online values of `features`, by feature name."""
    answer = store.get_online_features(features=features, entity_rows=[{"user_id": user_id}]).to_dict()
    return {name: values[0] for name, values in answer.items()}


def push_online(store: FeatureStore, frame: pd.DataFrame) -> None:
    """`FeatureStore.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)` without its last step.

    Feast's push writes the frame online to every view the push source feeds (here one, so one SQLite
    transaction), then re-reads the whole registry from disk, uncached, to refresh precomputed feature
    services, which Aisle does not define: ~50 ms of a ~60 ms event, measured on the tiny shop. So this
    finds the push source's views in the cached registry and writes to them itself.
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


def merge_into_session(store: FeatureStore, event: Event, window_s: int) -> Session:
    """Merge `event` into the user's online session row and write the merged row back (one online write).
    Call it under the event log's write lock: two merges of one user must not interleave."""
    session = Session.from_online(online_row(store, SESSION_FEATURES, event.user_id)).merged(event, window_s)
    push_online(store, session.frame(event.user_id))
    return session
