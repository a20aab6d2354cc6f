"""Shared fixtures: one tiny demo workspace built for real (generator, dbt build, feast apply and
materialize) once per test session, and the real Online Retail file where ../shared has it."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from scoring.pipeline import publish
from scoring.pipeline.run_folder import swap_link
from scoring.settings import SHARED_ONLINE_RETAIL, Settings

LISTED_ONLY = "U000001"  # a published user whose candidates realtime_copy leaves out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_settings(data_dir: Path, **overrides) -> Settings:
    """A demo shop small enough for the default suite, with every stage still real."""
    values = dict(
        source="demo",
        raw_path=None,
        data_dir=data_dir,
        as_of=None,
        demo_users=150,
        demo_items=60,
        demo_days=90,
        demo_defect_rate=0.02,
        finetune_steps=8,
        finetune_batch_size=8,
        max_training_pairs=400,
        max_seq_length=48,
        candidates_k=30,
        top_n=10,
        popular_k=20,
        label_window_days=30,
        feast_port=_free_port(),
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A built tiny demo workspace: raw files, warehouse, marts, Feast registry and online store."""
    from scoring.ingest.prepare import prepare_raw
    from scoring.pipeline.build import build_features

    settings = tiny_settings(tmp_path_factory.mktemp("workspace"))
    prepare_raw(settings)
    build_features(settings)
    return settings


@pytest.fixture(scope="session")
def scored_workspace(workspace: Settings) -> tuple[Settings, Path]:
    """The tiny workspace after one full scoring run; returns (settings, run folder)."""
    from scoring.pipeline.run_folder import RunFolder
    from scoring.pipeline.stages import score_run

    run = RunFolder.create(workspace.runs_dir, workspace.model_dump(mode="json"))
    score_run(workspace, run)
    run.promote(workspace.runs_dir)
    return workspace, run.root


def realtime_copy(workspace: Settings, run_dir: Path, data_dir: Path, **overrides) -> Settings:
    """A workspace of its own for the server: the live build, the online store, the publication (with the
    candidate pool: published by `make score`, or built here from the run the same way when absent), and
    runs/current linked to the scored run; `overrides` go to the tiny settings. One published user's
    candidates are left out of the pool, so the fallback to their published list is served too
    (LISTED_ONLY)."""
    copy = tiny_settings(data_dir, **{"max_request_bytes": 2048, **overrides})
    live = workspace.live_dir.resolve()
    shutil.copytree(live, copy.builds_dir / live.name)
    swap_link(copy.live_dir, copy.builds_dir / live.name)
    shutil.copytree(workspace.feast_dir, copy.feast_dir, ignore=shutil.ignore_patterns("serve-*.log"))
    shutil.copytree(workspace.published_dir, copy.published_dir)
    path = copy.published_dir / publish.CANDIDATES_FILE
    if path.exists():
        pool = pd.read_parquet(path)
    else:
        pool = publish.candidates_frame(
            pd.read_parquet(run_dir / "ranked.parquet"), copy.serve_candidates, run_dir.name
        )
    pool[pool["user_id"] != LISTED_ONLY].to_parquet(path, index=False)
    copy.runs_dir.mkdir(parents=True, exist_ok=True)
    (copy.runs_dir / run_dir.name).symlink_to(run_dir.resolve())
    swap_link(copy.runs_dir / "current", copy.runs_dir / run_dir.name)
    return copy


def online_lookup(url: str, service: str, entities: dict[str, list]) -> dict[str, list]:
    """One `POST /get-online-features` of a feature service over HTTP, by feature name: each name's values,
    one per entity row (the answer is column-wise and its order is not fixed)."""
    import requests

    response = requests.post(
        f"{url}/get-online-features", json={"feature_service": service, "entities": entities}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return {
        name: result["values"]
        for name, result in zip(body["metadata"]["feature_names"], body["results"], strict=True)
    }


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """The test session's one local Spark session (local[2]), shared by every Spark test; skips with the
    reason where pyspark or Java is missing."""
    from scoring.spark.session import SparkUnavailable, spark_session

    try:
        session = spark_session(tiny_settings(tmp_path_factory.mktemp("spark")))
    except SparkUnavailable as error:
        pytest.skip(str(error))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def online_retail_path() -> Path:
    if not SHARED_ONLINE_RETAIL.exists():
        pytest.skip(f"the UCI Online Retail file is not at {SHARED_ONLINE_RETAIL} (it lives in ../shared)")
    return SHARED_ONLINE_RETAIL


# ----- test tiers ------------------------------------------------------------------------------------------
# The markers of pyproject.toml, derived from the fixtures a test uses (directly or through other fixtures):
#   e2e          `scored_workspace`: the whole nightly job ran
#   integration  `workspace`, or any module- or session-scoped fixture that returns a built workspace (its
#                return annotation names Settings)
#   serving      a fixture or test that starts the feature server (its code uses FeatureServer)
#   browser      `chromium` (headless Chromium)
#   slow         `online_retail_path` (the real UCI Online Retail file)
#   spark        `spark` (the shared local Spark session), or a fixture that uses it
#   unit         none of the above: in process, nothing built, no server, no browser, no real data
# A module or test that builds things in its own body says so with `pytestmark = pytest.mark.<tier>` or a
# mark; an explicit `integration` or `e2e` mark wins over the derived one. `make test-fast` runs `-m unit`.
TIERS = ("integration", "e2e")
NOT_UNIT = ("integration", "e2e", "serving", "browser", "slow", "spark")


def _uses(code, name: str) -> bool:
    """Whether a function's code (or a function nested in it) refers to a global called `name`."""
    return name in code.co_names or any(
        _uses(const, name) for const in code.co_consts if hasattr(const, "co_names")
    )


def _derived_markers(item: pytest.Item) -> set[str]:
    names = set(getattr(item, "fixturenames", ()))
    info = getattr(item, "_fixtureinfo", None)
    fixturedefs = [d for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]
    builds_workspace = any(
        d.scope != "function" and "Settings" in str(getattr(d.func, "__annotations__", {}).get("return", ""))
        for d in fixturedefs
    )
    functions = [d.func for d in fixturedefs] + [getattr(item, "function", None)]
    derived = set()
    if "scored_workspace" in names:
        derived.add("e2e")
    elif "workspace" in names or builds_workspace:
        derived.add("integration")
    if any(hasattr(f, "__code__") and _uses(f.__code__, "FeatureServer") for f in functions):
        derived.add("serving")
    if "chromium" in names:
        derived.add("browser")
    if "online_retail_path" in names:
        derived.add("slow")
    if "spark" in names:
        derived.add("spark")
    return derived


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        present = {mark.name for mark in item.iter_markers()}
        derived = _derived_markers(item)
        if present & set(TIERS):
            derived -= set(TIERS)
        for name in sorted(derived - present):
            item.add_marker(name)
        if not (present | derived) & set(NOT_UNIT):
            item.add_marker("unit")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the browser tier; `make test` installs it where apt-get is usable."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed (make test installs it where apt-get is usable)")
