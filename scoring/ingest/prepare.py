"""The raw data a run reads: the demo shop written (or reused) when it is the source, your own files or
the Online Retail file checked against the contract before dbt sees them; and the demo's next day."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from scoring.errors import AisleError
from scoring.events.log import EventLog
from scoring.ingest import arrivals, demo_shop, raw_contract
from scoring.settings import Settings


def prepare_raw(settings: Settings) -> dict:
    """Generate the demo shop when it is the source and its files are missing or stale, and seal the
    events the server accepted since the last build into the raw folder (`seal_served_events`).

    A shop whose held-back days were partly released is still current: its parameters match, and the
    released drops stay in the raw folder beside the initial files."""
    if settings.source != "demo":
        sealed = seal_served_events(settings)
        raw_contract.check(settings)
        return {"raw_path": str(settings.resolved_raw_path), **sealed}
    out = settings.resolved_raw_path
    params = demo_shop.shop_parameters(
        n_users=settings.demo_users,
        n_items=settings.demo_items,
        days=settings.demo_days,
        seed=settings.demo_seed,
        defect_rate=settings.demo_defect_rate,
        end_date=settings.demo_end_date,
        cadence=settings.demo_cadence,
        pending_days=settings.demo_pending_days,
    )
    summary_file = out / "_truth" / "summary.json"
    if summary_file.exists() and json.loads(summary_file.read_text()).get("parameters") == params:
        return {"raw_path": str(out), "generated": False, **seal_served_events(settings)}
    summary = demo_shop.generate(out, **params)
    return {
        "raw_path": str(out),
        "generated": True,
        "rows": summary["row_counts"],
        **seal_served_events(settings),
    }


def seal_served_events(settings: Settings) -> dict:
    """The events `POST /events` accepted and no build has read yet, written to the raw folder as one
    drop of the events contract (scoring/events/log.py), so this build governs them like any other raw
    row. Online Retail's adapter reads its own file layout, not the contract, so there they stay in the
    log alone (docs/updates.md)."""
    if settings.source == "online_retail":
        return {}
    log = EventLog(settings.event_log_path)
    try:
        path = log.seal(settings.resolved_raw_path, settings.raw_format, datetime.now(UTC).date())
    finally:
        log.close()
    return {"served_events": path.name} if path is not None else {}


def next_day(settings: Settings) -> list[Path]:
    """Release the earliest held-back day (`aisle demo next-day`): its drops move from the raw folder's
    _pending/ into the raw folder, where the next `make update` (or `make score`) reads them."""
    raw = settings.resolved_raw_path
    pending = arrivals.pending_dir(raw)
    if not (pending.is_dir() and any(arrivals.drop_day(path) for path in pending.iterdir())):
        raise AisleError(
            f"no pending days in {pending}: every held-back day has arrived. To hold the demo shop's last "
            "N days back, set AISLE_DEMO_PENDING_DAYS=N and write the shop again: `aisle generate` does "
            f"when N differs from the shop's ({raw / '_truth' / 'summary.json'}), else remove {raw} first"
        )
    return arrivals.release_next_day(raw)
