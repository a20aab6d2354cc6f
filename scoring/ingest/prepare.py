"""The raw data a run reads: the demo shop written (or reused) when it is the source, your own files or
the Online Retail file checked against the contract before dbt sees them."""

from __future__ import annotations

import json

from scoring.ingest import demo_shop, raw_contract
from scoring.settings import Settings


def prepare_raw(settings: Settings) -> dict:
    """Generate the demo shop when it is the source and its files are missing or stale."""
    if settings.source != "demo":
        raw_contract.check(settings)
        return {"raw_path": str(settings.resolved_raw_path)}
    out = settings.resolved_raw_path
    params = demo_shop.shop_parameters(
        n_users=settings.demo_users,
        n_items=settings.demo_items,
        days=settings.demo_days,
        seed=settings.demo_seed,
        defect_rate=settings.demo_defect_rate,
        end_date=settings.demo_end_date,
        cadence=settings.demo_cadence,
    )
    summary_file = out / "_truth" / "summary.json"
    if summary_file.exists() and json.loads(summary_file.read_text()).get("parameters") == params:
        return {"raw_path": str(out), "generated": False}
    summary = demo_shop.generate(out, **params)
    return {"raw_path": str(out), "generated": True, "rows": summary["row_counts"]}
