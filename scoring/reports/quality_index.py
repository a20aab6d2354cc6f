"""The data-quality index: one figure from 0 to 100 per quality dimension, from the dbt build's test results.

Why from dbt's own results: the build's data tests already are the project's definition of quality, each
tagged with its dimension in the YAML (the tag is how `dbt test --select tag:privacy` runs one dimension).
The index reads what the build that is live recorded (`target/run_results.json`, with `manifest.json` for
each test's tags and the relation it tested), so the monitor adds no second set of checks that could
disagree with the build. The formula is in docs/monitoring.md; in short, each test costs its dimension
nothing when it passes, and at least half a test (a whole one when every tested row fails) when not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb

from scoring.settings import Settings
from scoring.warehouse import tables

DIMENSIONS = (
    "completeness",
    "uniqueness",
    "validity",
    "consistency",
    "timeliness",
    "integrity",
    "balance",
    "privacy",
)
# A test without a dimension tag falls back on its type (the project tags every test; this keeps a
# forgotten tag from dropping a test out of the index).
DIMENSION_OF_TEST_TYPE = {
    "not_null": "completeness",
    "unique": "uniqueness",
    "unique_combination_of_columns": "uniqueness",
    "accepted_values": "validity",
    "accepted_range": "validity",
    "relationships": "integrity",
    "not_in_future": "timeliness",
    "fresh_within": "timeliness",
    "share_within": "balance",
    "no_pii": "privacy",
}
FAILED = ("warn", "fail")  # the test ran and found rows: warn (severity warn) or fail (severity error)


def dimension_of(node: dict) -> str | None:
    """The test's dimension: its first tag that names one, else its test type's, else None."""
    for tag in node.get("tags", []):
        if tag in DIMENSIONS:
            return tag
    return DIMENSION_OF_TEST_TYPE.get((node.get("test_metadata") or {}).get("name", ""))


def tested_relation(node: dict, manifest: dict) -> str | None:
    """The relation a test reads: its attached model, else the first model or seed it depends on."""
    candidates = [node.get("attached_node"), *node.get("depends_on", {}).get("nodes", [])]
    for unique_id in candidates:
        target = manifest["nodes"].get(unique_id or "")
        if target and target.get("relation_name"):
            return target["relation_name"]
    return None


def penalty(status: str, failures: int, rows: int | None) -> float:
    """What one test costs its dimension, from 0 (passed) to 1.

    A test that ran and failed (warn or fail) costs 1/2 + 1/2 * min(1, failing rows / rows of the tested
    relation); one that could not run (error, skipped) costs 1, since nothing was verified.
    """
    if status == "pass":
        return 0.0
    if status in FAILED:
        share = min(1.0, failures / rows) if rows else 1.0
        return 0.5 + 0.5 * share
    return 1.0


def test_results(run_results: dict, manifest: dict, rows_of: Callable[[str], int | None]) -> list[dict]:
    """Every data test of the build (unit tests of SQL logic are not data quality) with its dimension,
    status, failing rows and, for a failing test, the rows of the relation it tested."""
    out = []
    for result in run_results["results"]:
        unique_id = result["unique_id"]
        if not unique_id.startswith("test."):
            continue
        node = manifest["nodes"].get(unique_id, {})
        status = result["status"]
        failures = int(result.get("failures") or 0)
        relation = tested_relation(node, manifest)
        rows = rows_of(relation) if status in FAILED and relation else None
        out.append(
            {
                "test": node.get("name", unique_id),
                "dimension": dimension_of(node),
                "status": status,
                "failures": failures,
                "rows": rows,
                "penalty": penalty(status, failures, rows),
            }
        )
    return out


def index(results: list[dict]) -> dict[str, dict]:
    """Per dimension: index = 100 * (1 - mean penalty of its tests), with the counts behind it.

    A dimension without tests has index None (nothing measured is not 100).
    """
    out = {}
    for dimension in DIMENSIONS:
        mine = [r for r in results if r["dimension"] == dimension]
        penalties = [r["penalty"] for r in mine]
        out[dimension] = {
            "index": round(100 * (1 - sum(penalties) / len(penalties)), 1) if mine else None,
            "tests": len(mine),
            "passed": sum(r["status"] == "pass" for r in mine),
            "failed": sum(r["status"] != "pass" for r in mine),
            "failing_rows": sum(r["failures"] for r in mine if r["status"] != "pass"),
            "failing_tests": [r["test"] for r in mine if r["status"] != "pass"],
        }
    return out


def _artifacts(target: Path) -> tuple[dict, dict]:
    return (
        json.loads((target / "run_results.json").read_text()),
        json.loads((target / "manifest.json").read_text()),
    )


def from_build(settings: Settings) -> dict:
    """The index of the live build: its dbt run results, failing tests sized against the warehouse."""
    run_results, manifest = _artifacts(settings.dbt_target_dir)
    with tables.connect(settings) as con:

        def rows_of(relation: str) -> int | None:
            try:
                return int(con.execute(f"select count(*) from {relation}").fetchone()[0])
            except duckdb.Error:  # a relation the warehouse does not hold: size unknown, full penalty
                return None

        results = test_results(run_results, manifest, rows_of)
    unmapped = sorted(r["test"] for r in results if r["dimension"] is None)
    return {
        "dimensions": index(results),
        "tests": len(results),
        "unmapped_tests": unmapped,
        "dbt_invocation": run_results["metadata"].get("invocation_id"),
    }
