"""dbt's docs are the one source of truth for Feast: every documented feature column reaches its view with
dbt's description, type and owner, the marts hold exactly the types dbt documents, and a manifest that
breaks any of this fails loudly (proved on modified copies of the real manifest).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from feast import Entity, ValueType

from scoring.features import feature_store
from scoring.settings import FEATURE_REPO, Settings

sys.path.insert(0, str(FEATURE_REPO))
import dbt_features  # noqa: E402  (lives in the Feast repo, which Feast itself imports by path)

EXPECTED_VIEWS = {
    "user_stats",
    "item_stats",
    "user_item_stats",
    "item_text",
    "user_history",
    "query_stats",
    "item_search_stats",
    "query_item_stats",
    "user_session_activity",
}
ENTITIES = {
    "user_id": Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING),
    "item_id": Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING),
    "query": Entity(name="query", join_keys=["query"], value_type=ValueType.STRING),
}


@pytest.fixture(scope="module")
def manifest(workspace: Settings) -> dict[str, Any]:
    """The manifest the workspace's `dbt build` wrote (the one `feast apply` read)."""
    return dbt_features.load_manifest(workspace.dbt_target_dir / "manifest.json")


@pytest.fixture(scope="module")
def applied_views(workspace: Settings) -> list:
    """Every applied view: Feast lists the stream views (user_session_activity, over a push source) apart,
    and reads their join keys back as features (dbt_features.registered_features)."""
    fs = feature_store.store(workspace)
    streams = fs.list_stream_feature_views()
    for view in streams:
        view.features = dbt_features.registered_features(view)
    return fs.list_feature_views() + streams


def _model(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return manifest["nodes"][f"model.aisle.{name}"]


def _mutated(tmp_path: Path, manifest: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the real manifest with one change, written where the generator can load it."""
    modified = copy.deepcopy(manifest)
    change(modified)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(modified))
    return path


# --- the real manifest, marts and registry agree -----------------------------------------------------------
def test_every_feast_model_becomes_its_view(
    workspace: Settings, manifest: dict[str, Any], applied_views: list
) -> None:
    views = dbt_features.feature_models_to_views(ENTITIES, workspace.dbt_target_dir / "manifest.json")
    assert set(views) == EXPECTED_VIEWS
    assert {view.name for view in applied_views} >= EXPECTED_VIEWS
    for model in dbt_features.feast_models(manifest):
        spec = model["config"]["meta"]["feast"]
        documented = {
            name
            for name in model["columns"]
            if name not in {*spec["entities"], "event_timestamp"}
            and (not spec.get("features") or name in spec["features"])
        }
        assert {field.name for field in views[spec["view"]].features} == documented, model["name"]


def test_applied_registry_has_no_drift_from_dbt(manifest: dict[str, Any], applied_views: list) -> None:
    assert dbt_features.registry_drift(manifest, applied_views) == []


def test_every_feature_has_a_description_an_owner_and_the_dbt_type(
    manifest: dict[str, Any], applied_views: list
) -> None:
    by_name = {view.name: view for view in applied_views}
    for model in dbt_features.feast_models(manifest):
        view = by_name[model["config"]["meta"]["feast"]["view"]]
        assert view.owner == model["config"]["meta"]["owner"] == "data-platform@aisle.example"
        assert view.description and view.description == model["description"].strip()
        assert view.tags["dbt_model"] == model["name"]
        assert {tag for tag, value in view.tags.items() if value == "true"} == set(model["config"]["tags"])
        for field in view.features:
            column = model["columns"][field.name]
            assert field.description == column["description"].strip() != ""
            assert field.tags["owner"] == view.owner
            assert field.dtype == dbt_features.DBT_TO_FEAST[column["data_type"]], field.name


def test_services_are_versioned_and_owned(workspace: Settings) -> None:
    services = {service.name: service for service in feature_store.store(workspace).list_feature_services()}
    assert {"ranking_v1", "recommendations_v1", "search_ranking_v1", "search_results_v1"} <= set(services)
    for service in services.values():
        assert service.owner and service.description
        assert service.tags["version"] == service.name.rsplit("_v", 1)[1]
    ranking = {projection.name for projection in services["ranking_v1"].feature_view_projections}
    assert ranking == {"user_stats", "item_stats", "user_item_stats"}
    search = {projection.name for projection in services["search_ranking_v1"].feature_view_projections}
    assert search == {"query_stats", "query_item_stats", "item_search_stats", "user_stats", "item_stats"}
    results = {projection.name for projection in services["search_results_v1"].feature_view_projections}
    assert results == {"search_results"}


def test_search_views_are_keyed_by_the_normalised_query(workspace: Settings, applied_views: list) -> None:
    """The `query` entity joins the search views; search_results is the scorer's, over its published file,
    and is applied (and left to publishing, not materialized) before any run has written that file."""
    fs = feature_store.store(workspace)
    assert fs.get_entity("query").join_key == "query"
    by_name = {view.name: view for view in applied_views}
    assert by_name["query_stats"].entities == ["query"]
    assert sorted(by_name["query_item_stats"].entities) == ["item", "query"]
    assert by_name["item_search_stats"].entities == ["item"]
    results = by_name["search_results"]
    assert results.entities == ["query"]
    assert {field.name for field in results.features} == {"item_ids", "scores", "reasons", "run_id"}
    assert results.batch_source.path == str(workspace.published_dir / "search_results.parquet")
    assert "search_results" in feature_store.PUBLISHED_VIEWS


def test_marts_hold_the_documented_types(manifest: dict[str, Any], workspace: Settings) -> None:
    for model in dbt_features.feast_models(manifest):
        schema = pq.read_schema(workspace.marts_dir / f"{model['name']}.parquet")
        assert dbt_features.mart_violations(model, schema) == [], model["name"]


# --- a manifest that breaks the rules fails, naming the rule and the column -----------------------------
def _drop_description(manifest: dict[str, Any]) -> None:
    _model(manifest, "fct_user_stats")["columns"]["monetary_value"]["description"] = "  "


def _drop_owner(manifest: dict[str, Any]) -> None:
    del _model(manifest, "fct_item_stats")["config"]["meta"]["owner"]


def _drop_model_description(manifest: dict[str, Any]) -> None:
    _model(manifest, "fct_item_stats")["description"] = ""


def _unknown_type(manifest: dict[str, Any]) -> None:
    _model(manifest, "fct_user_item_stats")["columns"]["times_bought"]["data_type"] = "hugeint"


def _missing_type(manifest: dict[str, Any]) -> None:
    _model(manifest, "fct_user_item_stats")["columns"]["times_bought"]["data_type"] = None


def _listed_but_undocumented(manifest: dict[str, Any]) -> None:
    del _model(manifest, "dim_items")["columns"]["list_price"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop_description, r"fct_user_stats\.monetary_value: a feature needs a description"),
        (_drop_owner, r"fct_item_stats: a feature view needs meta\.owner"),
        (_drop_model_description, r"fct_item_stats: a feature view needs a model description"),
        (_unknown_type, r"fct_user_item_stats\.times_bought: data_type 'hugeint' has no Feast type"),
        (_missing_type, r"fct_user_item_stats\.times_bought: data_type '' has no Feast type"),
        (
            _listed_but_undocumented,
            r"dim_items: meta\.feast\.features names undocumented columns \['list_price'\]",
        ),
    ],
)
def test_generator_refuses_an_ungoverned_feature(
    tmp_path: Path, manifest: dict[str, Any], change: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = _mutated(tmp_path, manifest, change)
    with pytest.raises(dbt_features.ManifestError, match=message):
        dbt_features.feature_models_to_views(ENTITIES, path)


def test_a_newly_documented_column_is_flagged_until_the_mart_and_registry_have_it(
    tmp_path: Path, manifest: dict[str, Any], applied_views: list, workspace: Settings
) -> None:
    def document_new_column(m: dict[str, Any]) -> None:
        _model(m, "fct_user_stats")["columns"]["days_between_orders"] = {
            "name": "days_between_orders",
            "description": "Mean days between orders.",
            "data_type": "double",
            "meta": {},
        }

    changed = dbt_features.load_manifest(_mutated(tmp_path, manifest, document_new_column))
    views = dbt_features.feature_models_to_views(ENTITIES, tmp_path / "manifest.json")
    assert "days_between_orders" in {field.name for field in views["user_stats"].features}
    assert dbt_features.registry_drift(changed, applied_views) == [
        "user_stats.days_between_orders: documented in dbt but missing from the feature view"
    ]
    schema = pq.read_schema(workspace.marts_dir / "fct_user_stats.parquet")
    assert dbt_features.mart_violations(_model(changed, "fct_user_stats"), schema) == [
        "fct_user_stats.days_between_orders: documented for Feast but missing from the mart"
    ]


def test_a_type_that_disagrees_with_the_contract_is_flagged(
    tmp_path: Path, manifest: dict[str, Any], applied_views: list, workspace: Settings
) -> None:
    def retype(m: dict[str, Any]) -> None:
        _model(m, "fct_user_stats")["columns"]["monetary_value"]["data_type"] = "bigint"

    changed = dbt_features.load_manifest(_mutated(tmp_path, manifest, retype))
    drift = dbt_features.registry_drift(changed, applied_views)
    assert len(drift) == 1 and drift[0].startswith("user_stats.monetary_value: dtype"), drift
    schema = pq.read_schema(workspace.marts_dir / "fct_user_stats.parquet")
    assert dbt_features.mart_violations(_model(changed, "fct_user_stats"), schema) == [
        "fct_user_stats.monetary_value: mart type double disagrees with dbt data_type 'bigint' (int64)"
    ]


def test_an_undocumented_mart_column_is_flagged(
    tmp_path: Path, manifest: dict[str, Any], applied_views: list, workspace: Settings
) -> None:
    def undocument(m: dict[str, Any]) -> None:
        del _model(m, "fct_item_stats")["columns"]["return_rate"]

    changed = dbt_features.load_manifest(_mutated(tmp_path, manifest, undocument))
    assert dbt_features.registry_drift(changed, applied_views) == [
        "item_stats.return_rate: in the feature view but not documented in dbt"
    ]
    schema = pq.read_schema(workspace.marts_dir / "fct_item_stats.parquet")
    assert dbt_features.mart_violations(_model(changed, "fct_item_stats"), schema) == [
        "fct_item_stats.return_rate: in the mart but not documented in dbt"
    ]


def test_changed_docs_owner_and_ttl_are_drift(
    tmp_path: Path, manifest: dict[str, Any], applied_views: list
) -> None:
    def edit(m: dict[str, Any]) -> None:
        model = _model(m, "fct_item_stats")
        model["columns"]["units_7d"]["description"] = "Units sold last week."
        model["config"]["meta"]["owner"] = "someone-else@aisle.example"
        model["config"]["meta"]["feast"]["ttl_days"] = 7

    drift = dbt_features.registry_drift(
        dbt_features.load_manifest(_mutated(tmp_path, manifest, edit)), applied_views
    )
    assert any(line.startswith("item_stats.units_7d: description") for line in drift), drift
    assert any(line.startswith("item_stats: owner") for line in drift), drift
    assert any(line.startswith("item_stats: ttl") for line in drift), drift
    # The owner flows to every feature's tags too, so each of item_stats' features reports it.
    features = dbt_features.feature_columns(_model(manifest, "fct_item_stats"))
    assert sum(line.startswith("item_stats.") and ": tags " in line for line in drift) == len(features) > 5, (
        drift
    )


# --- apply: the CLI's steps in a forked child ---------------------------------------------------------------
def test_applies_in_one_process_each_register_their_own_build_and_a_failure_is_reported(
    workspace: Settings, tmp_path: Path
) -> None:
    """Two builds applied one after the other by the same process each get their own marts in their
    registry (the repository's modules read the environment when imported, so a second import in this
    process would repeat the first build's paths); the caller's working directory and environment are
    left alone; an apply that fails raises with Feast's own message."""
    import os
    import shutil

    cwd, environ = os.getcwd(), dict(os.environ)
    builds = []
    for name in ("first", "second"):
        root = tmp_path / name
        shutil.copytree(workspace.live_dir.resolve(), root, ignore=shutil.ignore_patterns("registry.db"))
        staged = workspace.for_build(root)
        feature_store.apply(staged)
        builds.append(staged)
    assert os.getcwd() == cwd and dict(os.environ) == environ
    for staged in builds:
        views = feature_store.store(staged).list_feature_views()
        assert {view.name for view in views} >= EXPECTED_VIEWS - {"user_session_activity"}
        for view in views:
            if view.batch_source.path:  # the published views' sources live in the workspace
                assert Path(view.batch_source.path).parent in (staged.marts_dir, staged.published_dir), view

    broken = tmp_path / "broken"
    shutil.copytree(workspace.live_dir.resolve(), broken, ignore=shutil.ignore_patterns("registry.db"))
    (broken / "target" / "manifest.json").write_text("{not json")
    with pytest.raises(RuntimeError, match=r"(?s)feast apply failed \(exit 1\).*JSONDecodeError"):
        feature_store.apply(workspace.for_build(broken))
    assert os.getcwd() == cwd
