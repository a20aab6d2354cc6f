"""The quality rules against known truth: every injected defect is quarantined or repaired, no clean row
is touched, and the `files` adapter reads a folder of canonical CSV files just as it reads the demo shop.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from scoring import demo_shop, warehouse
from scoring.governance import defect_scorecard
from scoring.settings import Settings
from tests.conftest import tiny_settings

DIMENSIONS = {
    "completeness",
    "uniqueness",
    "validity",
    "consistency",
    "timeliness",
    "integrity",
    "balance",
    "privacy",
}


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
    conservation = warehouse.read(workspace, "select * from fct_row_conservation order by relation")
    assert list(conservation.relation) == ["events", "items", "users"]
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
    warehouse.dbt(settings, "build")
    return settings


def test_files_adapter_builds_from_canonical_csv(csv_workspace: Settings) -> None:
    conservation = warehouse.read(csv_workspace, "select * from fct_row_conservation")
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
    built = warehouse.read(
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
    """Audits are grouped by dimension (DESIGN section 4): each data test has exactly one dimension tag."""
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    untagged = [t["name"] for t in tests if len(set(t["tags"]) & DIMENSIONS) != 1]
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
