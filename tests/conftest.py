"""Shared fixtures: one tiny demo workspace built for real (generator, dbt build, feast apply and
materialize) once per test session, and the real Online Retail file where ../shared has it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scoring.settings import SHARED_ONLINE_RETAIL, Settings


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
    from scoring.pipeline import build_features, prepare_raw

    settings = tiny_settings(tmp_path_factory.mktemp("workspace"))
    prepare_raw(settings)
    build_features(settings)
    return settings


@pytest.fixture(scope="session")
def scored_workspace(workspace: Settings) -> tuple[Settings, Path]:
    """The tiny workspace after one full scoring run; returns (settings, run folder)."""
    from scoring.pipeline import score_run
    from scoring.run_folder import RunFolder

    run = RunFolder.create(workspace.runs_dir, workspace.model_dump(mode="json"))
    score_run(workspace, run)
    run.promote(workspace.runs_dir)
    return workspace, run.root


@pytest.fixture(scope="session")
def online_retail_path() -> Path:
    if not SHARED_ONLINE_RETAIL.exists():
        pytest.skip(f"the UCI Online Retail file is not at {SHARED_ONLINE_RETAIL} (it lives in ../shared)")
    return SHARED_ONLINE_RETAIL
