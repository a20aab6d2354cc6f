"""Feast definitions generated from the dbt manifest, so dbt's docs are the one source of truth.

A mart becomes a feature view when its dbt config has `meta.feast` (view name, entity columns, TTL).
Its features are the documented columns other than the entities and `event_timestamp`; each Field
takes its description and type from the column's dbt `description` and `data_type`, and the view takes
its description, owner and tags from the model. A model whose `meta.feast` names a `push_source` becomes a
StreamFeatureView over a PushSource of that name, with the mart as its batch source: a build materializes
it like the others, and pushes (POST /events, Feast's /push) write fresher rows online in between.
The TTL is `ttl_days` plus `ttl_hours`. `feast dbt import` does the same for BigQuery,
Snowflake and file sources with placeholder paths only, so Aisle reads the manifest itself.

A view's source is the mart's Parquet (`mart_path`: a file, or the folder of part files Spark writes) as
the engine's offline store reads it (`parquet_source`): a FileSource for DuckDB's offline store, a
SparkSource for Spark's (AISLE_ENGINE=spark).

The same mapping checks the two places the docs can fall out of step with: `mart_violations` (the
Parquet a mart wrote against its documented columns and types) and `registry_drift` (the applied Feast
registry against the manifest). tests/test_feast_definitions.py runs both.
"""

from __future__ import annotations

import json
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource, PushSource, StreamFeatureView
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Array, FeastType, Float32, Float64, Int32, Int64, String, UnixTimestamp

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def manifest_path() -> Path:
    """The manifest of the build being applied: each build has its own dbt target folder."""
    return Path(os.environ.get("AISLE_DBT_TARGET", DATA_DIR / "live" / "target")) / "manifest.json"


# dbt contract data_type -> Feast type, and the Arrow type DuckDB writes into the mart's Parquet for it.
# Anything else is an error, so a type never drifts silently between the SQL, the file and Feast.
DBT_TO_FEAST: dict[str, FeastType] = {
    "bigint": Int64,
    "integer": Int32,
    "double": Float64,
    "float": Float32,
    "varchar": String,
    "varchar[]": Array(String),
    "bigint[]": Array(Int64),
    "timestamp": UnixTimestamp,
}
DBT_TO_ARROW: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "varchar": pa.string(),
    "varchar[]": pa.list_(pa.string()),
    "bigint[]": pa.list_(pa.int64()),
    "timestamp": pa.timestamp("us"),
}


class ManifestError(ValueError):
    """The manifest cannot define a governed feature (missing docs, owner or a known type)."""


def load_manifest(path: Path | None = None) -> dict[str, Any]:
    path = path or manifest_path()
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
    """The documented columns of a mart that are features (not keys, not the timestamp).

    A name in `meta.feast.features` that dbt does not document is an error rather than a silent drop,
    so deleting a column's docs cannot quietly remove a feature that consumers read.
    """
    spec = model["config"]["meta"]["feast"]
    skip = {*spec["entities"], "event_timestamp"}
    wanted = spec.get("features")
    columns = [c for name, c in model["columns"].items() if name not in skip]
    if wanted:
        undocumented = sorted(set(wanted) - {c["name"] for c in columns})
        if undocumented:
            raise ManifestError(
                f"{model['name']}: meta.feast.features names undocumented columns {undocumented}; "
                "document them in dbt (description and data_type) or drop them from the list."
            )
        columns = [c for c in columns if c["name"] in wanted]
    return columns


def model_owner(model: dict[str, Any]) -> str:
    owner = model["config"]["meta"].get("owner") or ""
    if not owner:
        raise ManifestError(f"{model['name']}: a feature view needs meta.owner in dbt.")
    return owner


def data_type_of(model_name: str, column: dict[str, Any]) -> str:
    """The column's dbt data_type, which must be one Aisle knows how to carry into Feast."""
    data_type = (column.get("data_type") or "").lower()
    if data_type not in DBT_TO_FEAST:
        raise ManifestError(
            f"{model_name}.{column['name']}: data_type {data_type!r} has no Feast type "
            f"(known: {', '.join(DBT_TO_FEAST)})."
        )
    return data_type


def field_for(model: dict[str, Any], column: dict[str, Any]) -> Field:
    """One feature: dbt's column description and type, and an owner (the column's, else the model's)."""
    description = (column.get("description") or "").strip()
    if not description:
        raise ManifestError(f"{model['name']}.{column['name']}: a feature needs a description in dbt.")
    owner = (column.get("meta") or {}).get("owner") or model_owner(model)
    return Field(
        name=column["name"],
        dtype=DBT_TO_FEAST[data_type_of(model["name"], column)],
        description=description,
        tags={"owner": owner, "dbt_column": f"{model['name']}.{column['name']}"},
    )


def view_ttl(spec: dict[str, Any]) -> timedelta:
    """A view's TTL from its `meta.feast`: `ttl_days` and `ttl_hours` (0 when absent: no expiry)."""
    return timedelta(days=int(spec.get("ttl_days", 0)), hours=int(spec.get("ttl_hours", 0)))


def feature_view(model: dict[str, Any], entities: dict[str, Entity], marts_dir: Path) -> FeatureView:
    """One Feast feature view over the Parquet dbt wrote for `model`; a stream feature view over a
    PushSource (batch source: that Parquet) when the model names a `push_source`."""
    spec = model["config"]["meta"]["feast"]
    owner = model_owner(model)
    description = (model.get("description") or "").strip()
    if not description:
        raise ManifestError(f"{model['name']}: a feature view needs a model description in dbt.")
    source = parquet_source(
        name=f"{model['name']}_source",
        path=mart_path(marts_dir, model["name"]),
        description=f"dbt model {model['name']} (Parquet, external materialization)",
    )
    arguments: dict[str, Any] = dict(
        name=spec["view"],
        entities=[entities[key] for key in spec["entities"]],
        ttl=view_ttl(spec),
        schema=[field_for(model, column) for column in feature_columns(model)],
        online=True,
        description=description,
        owner=owner,
        tags=view_tags(model),
    )
    if spec.get("push_source"):
        push = PushSource(
            name=spec["push_source"],
            batch_source=source,
            description=f"Fresh rows of dbt model {model['name']}, pushed online between builds",
        )
        # Feast warns that stream feature views are alpha on every construction (each apply, each server
        # worker); Aisle uses only their push path (no stream engine, no aggregations), which is stable.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Stream feature views are experimental", RuntimeWarning)
            return StreamFeatureView(source=push, timestamp_field="event_timestamp", **arguments)
    return FeatureView(source=source, **arguments)


def engine() -> str:
    """The engine of the build being applied (AISLE_ENGINE): it decides which offline store reads the
    Parquet, and so which kind of data source the views declare."""
    return os.environ.get("AISLE_ENGINE", "duckdb")


def mart_path(directory: Path, model: str) -> Path:
    """Where dbt wrote a mart: `<model>.parquet` (dbt-duckdb's external file) or `<model>/` (a folder of
    part files, as Spark writes a table). Whichever exists wins, so the Spark offline store also serves
    marts DuckDB built; before the build (`dbt parse`, a definitions test) it is the engine's layout."""
    file, folder = directory / f"{model}.parquet", directory / model
    if file.exists():
        return file
    if folder.is_dir() or engine() == "spark":
        return folder
    return file


def parquet_source(name: str, path: Path, description: str) -> DataSource:
    """A Parquet file or folder as the data source of the engine's offline store: a FileSource that
    Feast's DuckDB store reads, or a SparkSource for its Spark store (which accepts no other kind)."""
    if engine() != "spark":
        return FileSource(
            name=name, path=str(path), timestamp_field="event_timestamp", description=description
        )
    # Feast warns that its Spark source is alpha on every construction (each apply, each import of the
    # repository); Aisle uses only its path + parquet reading, which the point-in-time tests cover.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The spark data source API is an experimental", RuntimeWarning)
        return SparkSource(
            name=name,
            path=str(path),
            file_format="parquet",
            timestamp_field="event_timestamp",
            description=description,
        )


def view_tags(model: dict[str, Any]) -> dict[str, str]:
    return {"dbt_model": model["name"], **{tag: "true" for tag in model["config"].get("tags", [])}}


def marts_dir() -> Path:
    return Path(os.environ.get("AISLE_MARTS_DIR", DATA_DIR / "live" / "marts"))


def feature_models_to_views(entities: dict[str, Entity], path: Path | None = None) -> dict[str, FeatureView]:
    """Every feature view the dbt manifest declares, by view name."""
    manifest = load_manifest(path)
    directory = marts_dir()
    views = [feature_view(model, entities, directory) for model in feast_models(manifest)]
    return {view.name: view for view in views}


def mart_violations(model: dict[str, Any], schema: pa.Schema) -> list[str]:
    """How the Parquet file dbt wrote for a Feast model breaks its documentation.

    dbt enforces each mart's contract on the table it builds before writing the Parquet file (dbt-duckdb's
    external materialization), not on the file Feast reads; this checks the file: every column in it is
    documented (an undocumented one never reaches Feast), and every feature column exists with exactly
    the Arrow type its dbt data_type promises (the type Feast declares for it).
    """
    name = model["name"]
    problems = [
        f"{name}.{column}: in the mart but not documented in dbt"
        for column in schema.names
        if column not in model["columns"]
    ]
    for column in feature_columns(model):
        expected = DBT_TO_ARROW[data_type_of(name, column)]
        if column["name"] not in schema.names:
            problems.append(f"{name}.{column['name']}: documented for Feast but missing from the mart")
            continue
        actual = schema.field(column["name"]).type
        if actual != expected:
            problems.append(
                f"{name}.{column['name']}: mart type {actual} disagrees with dbt data_type "
                f"{column['data_type']!r} ({expected})"
            )
    return problems


def registered_features(view: FeatureView) -> list[Field]:
    """A view's features as the registry holds them, without its join keys: Feast 0.67 serialises a stream
    feature view's whole schema, join keys included, as its features, so one read back from the registry
    lists `user_id` among them; it is the entity, not a feature."""
    keys = {column.name for column in view.entity_columns}
    return [field for field in view.features if field.name not in keys]


def registry_drift(manifest: dict[str, Any], views: list[FeatureView]) -> list[str]:
    """How applied feature views differ from what the manifest defines (empty when in sync).

    Catches a registry that `feast apply` has not caught up with: a documented feature missing from its
    view, an extra one, or a type, description, owner, TTL or tag that disagrees with dbt.
    """
    applied = {view.name: view for view in views}
    problems = []
    for model in feast_models(manifest):
        spec = model["config"]["meta"]["feast"]
        view = applied.get(spec["view"])
        if view is None:
            problems.append(f"{spec['view']}: defined by dbt model {model['name']} but not applied")
            continue
        expected = {field.name: field for field in (field_for(model, c) for c in feature_columns(model))}
        actual = {field.name: field for field in registered_features(view)}
        for missing in sorted(expected.keys() - actual.keys()):
            problems.append(f"{view.name}.{missing}: documented in dbt but missing from the feature view")
        for extra in sorted(actual.keys() - expected.keys()):
            problems.append(f"{view.name}.{extra}: in the feature view but not documented in dbt")
        for name in sorted(expected.keys() & actual.keys()):
            want, got = expected[name], actual[name]
            for attribute in ("dtype", "description", "tags"):
                if getattr(want, attribute) != getattr(got, attribute):
                    problems.append(
                        f"{view.name}.{name}: {attribute} {getattr(got, attribute)!r} "
                        f"disagrees with dbt ({getattr(want, attribute)!r})"
                    )
        view_expected = {
            "owner": model_owner(model),
            "description": (model.get("description") or "").strip(),
            "ttl": view_ttl(spec),
            "tags": view_tags(model),
        }
        for attribute, want in view_expected.items():
            if getattr(view, attribute) != want:
                problems.append(
                    f"{view.name}: {attribute} {getattr(view, attribute)!r} disagrees with dbt ({want!r})"
                )
    return problems
