"""Feast definitions generated from the dbt manifest, so dbt's docs are the one source of truth.

A mart becomes a feature view when its dbt config has `meta.feast` (view name, entity columns, TTL).
Its features are the documented columns other than the entities and `event_timestamp`; each Field
takes its description and type from the column's dbt `description` and `data_type`, and the view takes
its description, owner and tags from the model. `feast dbt import` does the same for BigQuery,
Snowflake and file sources with placeholder paths only, so Aisle reads the manifest itself.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Array, FeastType, Float32, Float64, Int64, String, UnixTimestamp

MANIFEST = Path(__file__).resolve().parents[1] / "dbt_project" / "target" / "manifest.json"

# dbt contract data_type -> Feast type. Anything else is an error, so a type never drifts silently.
DBT_TO_FEAST: dict[str, FeastType] = {
    "bigint": Int64,
    "integer": Int64,
    "double": Float64,
    "float": Float32,
    "varchar": String,
    "varchar[]": Array(String),
    "timestamp": UnixTimestamp,
}


class ManifestError(ValueError):
    """The manifest cannot define a governed feature (missing docs, owner or a known type)."""


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    if not path.exists():
        raise ManifestError(f"{path} is missing: run `dbt parse` (or `make dbt`) before `feast apply`.")
    return json.loads(path.read_text())


def feast_models(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The dbt models that declare a Feast view, in a stable order."""
    models = [
        node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["config"].get("meta", {}).get("feast")
    ]
    return sorted(models, key=lambda node: node["name"])


def feature_columns(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The documented columns of a mart that are features (not keys, not the timestamp)."""
    spec = model["config"]["meta"]["feast"]
    skip = {*spec["entities"], "event_timestamp"}
    wanted = spec.get("features")
    columns = [c for name, c in model["columns"].items() if name not in skip]
    if wanted:
        columns = [c for c in columns if c["name"] in wanted]
    return columns


def field_for(model_name: str, column: dict[str, Any]) -> Field:
    description = (column.get("description") or "").strip()
    if not description:
        raise ManifestError(f"{model_name}.{column['name']}: a feature needs a description in dbt.")
    data_type = (column.get("data_type") or "").lower()
    if data_type not in DBT_TO_FEAST:
        raise ManifestError(
            f"{model_name}.{column['name']}: data_type {data_type!r} has no Feast type "
            f"(known: {', '.join(DBT_TO_FEAST)})."
        )
    return Field(name=column["name"], dtype=DBT_TO_FEAST[data_type], description=description)


def feature_view(model: dict[str, Any], entities: dict[str, Entity], marts_dir: Path) -> FeatureView:
    """One Feast feature view over the Parquet file dbt wrote for `model`."""
    spec = model["config"]["meta"]["feast"]
    owner = model["config"]["meta"].get("owner") or ""
    if not owner:
        raise ManifestError(f"{model['name']}: a feature view needs meta.owner in dbt.")
    source = FileSource(
        name=f"{model['name']}_source",
        path=str(marts_dir / f"{model['name']}.parquet"),
        timestamp_field="event_timestamp",
        description=f"dbt model {model['name']} (Parquet, external materialization)",
    )
    return FeatureView(
        name=spec["view"],
        entities=[entities[key] for key in spec["entities"]],
        ttl=timedelta(days=int(spec.get("ttl_days", 0))),
        schema=[field_for(model["name"], column) for column in feature_columns(model)],
        source=source,
        online=True,
        description=model["description"].strip(),
        owner=owner,
        tags={"dbt_model": model["name"], **{tag: "true" for tag in model["config"].get("tags", [])}},
    )


def marts_dir() -> Path:
    return Path(os.environ.get("AISLE_MARTS_DIR", Path(__file__).resolve().parents[1] / "data" / "marts"))


def feature_models_to_views(entities: dict[str, Entity], path: Path = MANIFEST) -> dict[str, FeatureView]:
    """Every feature view the dbt manifest declares, by view name."""
    manifest = load_manifest(path)
    directory = marts_dir()
    views = [feature_view(model, entities, directory) for model in feast_models(manifest)]
    return {view.name: view for view in views}
