"""The quality rules against known truth: every injected defect is quarantined or repaired, no clean row
is touched, and the `files` adapter reads a folder of canonical CSV files just as it reads the demo shop.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from scoring.features import feature_store
from scoring.ingest import demo_shop
from scoring.reports.quality_index import DIMENSIONS
from scoring.settings import DBT_DIR, Settings
from scoring.warehouse import dbt, tables
from scoring.warehouse.quality import defect_scorecard
from tests.conftest import tiny_settings

pytestmark = pytest.mark.integration  # dbt builds of the demo shop


def _assert_perfect(card: pd.DataFrame) -> None:
    print("\n" + card.to_string(index=False))
    misses = card[(card.recall < 1.0) | (card.precision < 1.0)]
    assert misses.empty, f"rules missed or over-flagged:\n{misses.to_string(index=False)}"


def test_every_defect_class_is_caught_exactly(workspace: Settings) -> None:
    card = defect_scorecard(workspace)
    assert set(card.defect_class) >= {
        "duplicate",
        "missing_user",
        "bad_price",
        "quantity_outlier",
        "future_timestamp",
        "orphan_item",
        "malformed_value",
        "messy_text",
        "pii_in_text",
    }
    assert (card.injected[card.defect_class != "(clean rows)"] > 0).all(), "a class had nothing to test"
    _assert_perfect(card)


def test_row_conservation_holds_per_relation(workspace: Settings) -> None:
    conservation = tables.read(workspace, "select * from fct_row_conservation order by relation")
    assert list(conservation.relation) == ["events", "items", "searches", "users"]
    assert conservation.is_balanced.all()
    assert (conservation.raw_rows == conservation.clean_rows + conservation.quarantined_rows).all()


@pytest.fixture(scope="module")
def csv_workspace(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A catalogue-heavy demo shop (many items, so many title and PII repairs) written as canonical CSV
    files, the way a user would bring their own data, and built through the `files` adapter."""
    root = tmp_path_factory.mktemp("csv_shop")
    parquet_dir, csv_dir = root / "parquet", root / "csv"
    demo_shop.generate(parquet_dir, n_users=60, n_items=400, days=30, seed=5, defect_rate=0.05)
    csv_dir.mkdir()
    for name in ("events", "items", "users"):
        pd.read_parquet(parquet_dir / f"{name}.parquet").to_csv(csv_dir / f"{name}.csv", index=False)
    shutil.copytree(parquet_dir / "_truth", csv_dir / "_truth")
    settings = tiny_settings(root / "data", source="files", raw_path=csv_dir, raw_format="csv")
    dbt.run(settings, "build")
    return settings


def test_files_adapter_builds_from_canonical_csv(csv_workspace: Settings) -> None:
    conservation = tables.read(csv_workspace, "select * from fct_row_conservation")
    folder = Path(csv_workspace.raw_path)
    raw = {name: len(pd.read_csv(folder / f"{name}.csv")) for name in ("events", "items", "users")}
    assert dict(zip(conservation.relation, conservation.raw_rows, strict=True)) == raw
    assert conservation.is_balanced.all()
    assert set(conservation.source_name) == {"files"}
    card = defect_scorecard(csv_workspace)
    repairs = card.set_index("defect_class").loc[["messy_text", "pii_in_text"]]
    assert (repairs.injected >= 10).all()
    _assert_perfect(card)


@pytest.fixture(scope="module")
def manifest(workspace: Settings) -> dict:
    """The dbt manifest the workspace's live build wrote (each build has its own target folder)."""
    return json.loads((workspace.dbt_target_dir / "manifest.json").read_text())


def test_every_model_and_column_is_documented(workspace: Settings, manifest: dict) -> None:
    """dbt docs are the catalogue: each built model, and each column it really has, carries a description."""
    built = tables.read(
        workspace,
        "select table_schema, table_name, column_name from information_schema.columns"
        " where table_schema in ('staging', 'intermediate', 'main')",
    )
    undocumented = []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or not node["config"].get("enabled", True):
            continue
        if not node["description"].strip():
            undocumented.append(node["name"])
        documented = {name for name, c in node["columns"].items() if c.get("description", "").strip()}
        actual = set(
            built[(built.table_schema == node["schema"]) & (built.table_name == node["alias"])].column_name
        )
        assert actual, f"{node['name']} was not built"
        undocumented += [f"{node['name']}.{column}" for column in sorted(actual - documented)]
    assert not undocumented, f"undocumented: {undocumented}"


def test_every_data_test_names_its_quality_dimension(manifest: dict) -> None:
    """Audits are grouped by dimension (the README's data governance): each data test has exactly one
    dimension tag."""
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    untagged = [t["name"] for t in tests if len(set(t["tags"]) & set(DIMENSIONS)) != 1]
    assert tests and not untagged, f"tests without exactly one dimension tag: {untagged}"
    severities = {t["config"]["severity"].lower() for t in tests}
    assert severities == {"error", "warn"}


def test_every_model_has_the_privacy_audit(manifest: dict) -> None:
    """PII never passes staging: `no_pii` runs on every staging, intermediate and mart model."""
    audited = {
        model
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test" and (node.get("test_metadata") or {}).get("name") == "no_pii"
        for model in node["depends_on"]["nodes"]
    }
    models = {
        key
        for key, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and node["config"].get("enabled", True)
    }
    assert models and not models - audited, f"models without no_pii: {sorted(models - audited)}"


# --- dbt-labs' jaffle-shop layout and dbt-project-evaluator's rules, checked by hand ---------------------
SOURCE_SWITCH = re.compile(r"aisle_source|uses_canonical_files|adapter_model|AISLE_SOURCE")


def test_only_staging_knows_which_source_is_active(manifest: dict) -> None:
    """One staging folder per source picks it; intermediate models and marts never branch on it."""
    models = DBT_DIR / "models"
    offenders = [
        f"{path.relative_to(DBT_DIR)}:{number}: {line.strip()}"
        for layer in ("intermediate", "marts")
        for path in sorted((models / layer).rglob("*"))
        if path.is_file()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SOURCE_SWITCH.search(line)
    ]
    assert not offenders, f"a source switch outside staging: {offenders}"
    for source in ("shop", "uci_retail"):
        beside = {path.name for path in (models / "staging" / source).iterdir()}
        assert {f"_{source}__sources.yml", f"_{source}__models.yml", f"_{source}__unit_tests.yml"} <= beside
    # The demo shop: the shop adapter and the source-agnostic layer are on, Online Retail's models are off.
    enabled = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    disabled = {n[0]["name"] for n in manifest["disabled"].values() if n[0]["resource_type"] == "model"}
    assert {"stg_events", "stg_items", "stg_users", "stg_shop__events", "stg_shop__items"} <= enabled
    assert {"stg_uci_retail__events", "stg_uci_retail__items", "stg_uci_retail__users"} <= disabled


def test_every_model_has_a_tested_primary_key(manifest: dict) -> None:
    """unique and not_null on one column, or unique_combination_of_columns (the project's multi-column
    primary-key test) with not_null on each of its columns."""
    tests = defaultdict(list)
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test" and node.get("test_metadata") and node.get("attached_node"):
            meta = node["test_metadata"]
            tests[node["attached_node"]].append((meta["name"], node.get("column_name"), meta["kwargs"]))
    missing = []
    for key, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        not_null = {column for name, column, _ in tests[key] if name == "not_null"}
        unique = {column for name, column, _ in tests[key] if name == "unique"}
        combinations = [
            set(kwargs["combination_of_columns"])
            for name, _, kwargs in tests[key]
            if name == "unique_combination_of_columns"
        ]
        if not (unique & not_null or any(columns <= not_null for columns in combinations)):
            missing.append(node["name"])
    assert not missing, f"models without a tested primary key: {missing}"


def test_exposures_cover_every_feature_service_and_the_scorer(workspace: Settings, manifest: dict) -> None:
    """Each Feast feature service, and the nightly scorer, is an exposure with an owner, depending on the
    marts behind its views."""
    exposures = {exposure["name"]: exposure for exposure in manifest["exposures"].values()}
    for exposure in exposures.values():
        assert exposure["owner"]["email"] and exposure["description"].strip(), exposure["name"]
        assert exposure["depends_on"]["nodes"], exposure["name"]
    assert "nightly_scorer" in exposures
    fs = feature_store.store(workspace)
    # Feast lists the stream views (user_session_activity) apart from the others.
    views = {view.name: view for view in [*fs.list_feature_views(), *fs.list_stream_feature_views()]}
    for service in fs.list_feature_services():
        assert service.name in exposures, f"feature service {service.name} has no exposure"
        exposure = exposures[service.name]
        assert exposure["owner"]["email"] == service.owner
        parents = {node.rsplit(".", 1)[-1] for node in exposure["depends_on"]["nodes"]}
        behind = {views[p.name].tags.get("dbt_model") for p in service.feature_view_projections} - {None}
        assert behind <= parents, (service.name, behind - parents)


def test_the_settings_drive_the_dbt_vars(workspace: Settings, tmp_path: Path) -> None:
    """The one settings object exports AISLE_* variables; dbt's vars and the source freshness read them."""
    settings = tiny_settings(
        tmp_path / "data",
        raw_path=workspace.resolved_raw_path,
        history_length=3,
        max_line_quantity=99,
        max_price_ratio=7.5,
        session_timeout_minutes=45,
        freshness_max_days=9,
    )
    dbt.run(settings, "compile", "--select", "int_events_checked", "int_sessions", "fct_user_histories")
    compiled = settings.dbt_target_dir / "compiled" / "aisle" / "models"
    checked = (compiled / "intermediate" / "int_events_checked.sql").read_text()
    assert "abs(events.quantity) > 99" in checked
    assert "events.unit_price > 7.5 * item_prices.median_unit_price" in checked
    assert "seconds_since_previous > 2700" in (compiled / "intermediate" / "int_sessions.sql").read_text()
    assert "recency_rank <= 3" in (compiled / "marts" / "features" / "fct_user_histories.sql").read_text()
    built = json.loads((settings.dbt_target_dir / "manifest.json").read_text())
    assert built["sources"]["source.aisle.shop.events"]["freshness"]["warn_after"]["count"] == 9
    # Online Retail, a historical file, declares none (and its source is off while the shop's is on).
    assert built["disabled"]["source.aisle.uci_retail.invoice_lines"][0]["freshness"] is None
