"""Stage `monitor`: what this run's data looked like, recorded in the manifest so runs can be compared.

Why a stage and not only a report: the figures must describe the build the run actually scored, and a
build is replaced (and pruned) by the next one. So the stage records, before the gate decides:
- the rows quarantined per governance rule (every rule of the catalogue, zeros included, so runs align);
- the data-quality index per dimension from the live build's dbt test results (quality_index.py);
- a binned profile of every numeric feature of the Feast feature marts, on the latest snapshot of each
  entity (what materialization serves online);
- PSI drift of each feature against the last promoted run's profile (drift.py).
The runs page (runs.py) and the history (history.py) read it from there. docs/monitoring.md defines all of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np

from scoring.pipeline.run_folder import RunFolder
from scoring.reports import drift, history, quality_index
from scoring.settings import Settings
from scoring.warehouse import tables

NUMERIC_TYPES = ("bigint", "integer", "double", "float")
# The status RunFolder.promote gives a run that became `current` (forced ones too); only those are references.
PROMOTED = "succeeded"


def quarantine_by_rule(settings: Settings) -> dict[str, int]:
    """Rows quarantined (or held, or flagged) per rule code of the catalogue, zeros included."""
    counts = tables.read(
        settings,
        "select rules.rule_code, count(q.row_key) as n from governance.rules as rules"
        " left join fct_quarantine_rules as q using (rule_code) group by 1 order by 1",
    )
    return {str(code): int(n) for code, n in zip(counts.rule_code, counts.n, strict=True)}


def _feast_marts(manifest: dict) -> list[tuple[str, str, list[str], list[str]]]:
    """(model, Feast view, entity columns, numeric feature columns) of every mart Feast reads."""
    marts = []
    for node in sorted(manifest["nodes"].values(), key=lambda n: n["name"]):
        spec = node["config"].get("meta", {}).get("feast") if node["resource_type"] == "model" else None
        if not spec:
            continue
        skip = {*spec["entities"], "event_timestamp"}
        wanted = spec.get("features")
        numeric = [
            name
            for name, column in node["columns"].items()
            if name not in skip
            and (column.get("data_type") or "").lower() in NUMERIC_TYPES
            and (not wanted or name in wanted)
        ]
        if numeric:
            marts.append((node["name"], spec["view"], list(spec["entities"]), numeric))
    return marts


def _latest_values(path: Path, entities: list[str], columns: list[str]) -> dict[str, np.ndarray]:
    """Each numeric feature on the latest snapshot of each entity, read from the mart's Parquet.

    A feature named `*_at` is a Unix time (the project's naming rule); it is profiled as its age in days
    before the mart's newest snapshot, since the time itself moves on every run and would always drift.
    """
    keys = ", ".join(entities)
    selects = ", ".join(
        f"(newest.t - {c}) / 86400.0 as {c}" if c.endswith("_at") else f"cast({c} as double) as {c}"
        for c in columns
    )
    sql = (
        "with mart as (select * from read_parquet($path)),"
        " newest as (select epoch(max(event_timestamp)) as t from mart),"
        " latest as (select * from mart qualify row_number() over"
        f" (partition by {keys} order by event_timestamp desc) = 1)"
        f" select {selects} from latest, newest"
    )
    with duckdb.connect() as con:
        frame = con.execute(sql, {"path": str(path)}).df()
    return {c: frame[c].to_numpy(dtype=float, na_value=np.nan) for c in columns}


def feature_values(settings: Settings) -> dict[str, np.ndarray]:
    """Every numeric feature of the live build's Feast marts, keyed `view:feature` as Feast names them."""
    manifest = json.loads((settings.dbt_target_dir / "manifest.json").read_text())
    values: dict[str, np.ndarray] = {}
    for model, view, entities, columns in _feast_marts(manifest):
        path = tables.mart_path(settings, model)
        if path.exists():
            for column, x in _latest_values(path, entities, columns).items():
                values[f"{view}:{column}"] = x
    return values


def reference_profile(settings: Settings, run_id: str) -> tuple[str | None, dict]:
    """The last promoted run's profile: runs/current's, or, when `current` is this run itself (a rerun
    of the stage after promotion), the newest promoted earlier run's in the history."""
    current = settings.runs_dir / "current" / "manifest.json"
    if current.exists():
        manifest = json.loads(current.read_text())
        monitored = manifest.get("stages", {}).get("monitor", {})
        if manifest.get("run_id") != run_id and "profile" in monitored:
            return manifest["run_id"], monitored["profile"]
    earlier = [
        entry
        for entry in history.read(settings)
        if entry["run_id"] < run_id
        and entry.get("status") == PROMOTED
        and entry.get("monitor", {}).get("profile")
    ]
    if earlier:
        return earlier[-1]["run_id"], earlier[-1]["monitor"]["profile"]
    return None, {}


def monitor_run(settings: Settings, run: RunFolder) -> dict:
    """The stage: quarantine per rule, the quality index, the feature profile and drift, for the manifest."""
    values = feature_values(settings)
    reference_run, reference = reference_profile(settings, run.run_id)
    drifted = drift.compare(reference, values, settings.drift_alert_psi) if reference_run else {}
    return {
        "build": settings.live_dir.resolve().name,
        "quarantine": quarantine_by_rule(settings),
        "quality": quality_index.from_build(settings),
        "profile": {name: drift.profile(x, settings.drift_bins) for name, x in values.items()},
        "reference_run": reference_run,
        "drift": drifted,
        "drift_alerts": sorted(name for name, d in drifted.items() if d["alert"]),
    }
