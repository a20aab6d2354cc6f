"""Batch scoring sharded on Spark: the run's embedding, candidates, ranking and lists, over shards of
items and users, with the single-process functions (`mapInPandas`, one pandas frame per shard).

What is sharded by what, and what every shard shares:

- embedding: items.parquet sharded by `item_id`, users.parquet by `user_id`; each shard loads the run's
  encoder once (`embed.encoder`) and calls `text_vectors.encode`, as `embed_run` does for everyone;
- the FAISS index is built once on the driver from the shards' item vectors (`retrieval.index.build`,
  as the index stage does), and broadcast serialised to every shard;
- candidates: users (with their vectors) sharded by `user_id`; each shard calls `candidates.generate`
  with its users and the broadcast purchase lines, index and budget (the run's recorded source knobs).
  `generate` fits its global models (ALS, EASE, item similarity, TIFU-KNN neighbours, popularity) on
  everyone's purchases whichever users are asked, which is what makes a shard's candidates those of
  the single-process run; it also means every shard refits them, a fixed cost per shard until
  `generate` is split into a fit (once, on the driver, broadcast) and a per-user proposal;
- ranking: candidates sharded by `user_id`; each shard loads the run's ranker once and calls
  `stages.score` (Feast's point-in-time join over the marts' Parquet, then LightGBM);
- lists: ranked rows sharded by `user_id`; each shard calls `lists.choose` with the broadcast evidence
  (purchases, item vectors and titles: reasons count co-buyers over everyone).

A user's rows never leave their shard after the candidates, and each shard's work reads only its own
users' rows besides what is broadcast, so the lists equal the single-process run's
(tests/test_spark_scoring.py). Only the embeddings are not bit for bit the same: the encoder pads a
batch to its longest text, and a shard batches other texts together, so vectors move by a float32 ulp.
The ranker is trained once, on the driver, by the run itself: only scoring is sharded. Each stage
writes its Parquet folder under the output folder, like the run folder's files, so a stage's shards
can be rerun or inspected alone.

Shard workers read the run folder (the encoder, the ranker) and the workspace (the marts, the Feast
registry) from the paths in the settings: on one machine that is the local disk, on a cluster it must be
shared storage. The point-in-time join in a worker uses the file (DuckDB) offline store over the marts'
Parquet even when `engine` is `spark`: a Python worker cannot start the Spark session Feast's Spark
store would need, and one shard's entity rows fit in memory by construction.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retrieval import candidates as cand
from scoring.pipeline import lists, stages
from scoring.pipeline.run_folder import RunFolder
from scoring.settings import Settings
from scoring.training.text_vectors import RUN_VECTORS, TextVectors

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_SOURCE_COLUMNS = ", ".join(f"{name} float" for name in cand.SOURCES)
_MODEL_COLUMNS = ", ".join(f"{name} float" for name in cand.MODEL_SCORES)
CANDIDATES_SCHEMA = f"user_id string, item_id string, {_SOURCE_COLUMNS}, source string, {_MODEL_COLUMNS}"
RANKED_SCHEMA = (
    f"user_id string, item_id string, score double, source string, {_SOURCE_COLUMNS}, "
    "times_bought long, last_bought_days double, category string"
)
RECOMMENDATIONS_SCHEMA = (
    "user_id string, item_id string, rank long, score double, source string, list string, reason string"
)
TIMING_SCHEMA = (
    "stage string, shard int, rows long, load_seconds double, work_seconds double, rows_per_second double, "
    "peak_rss_mb double"
)


@dataclass(frozen=True)
class ShardJob:
    """One stage's work on one shard. `load` runs once per shard, in the worker (an encoder, a ranker,
    a deserialised index: per Arrow batch it would cost more than the work); `work` maps all the
    shard's rows at once, as the single-process function maps everyone's (a user's candidates are
    ranked within the user, so a user's rows must not be split across batches)."""

    name: str
    key: str
    schema: str
    load: Callable[[], Any]
    work: Callable[[Any, pd.DataFrame], pd.DataFrame]


def _whole(batches: Iterator[pd.DataFrame]) -> pd.DataFrame:
    frames = list(batches)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _limit_threads(threads: int) -> None:
    """Torch and FAISS threads of this worker (LightGBM gets its own from the ranker's `threads`)."""
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def _shard_frame(frame: DataFrame, key: str, shards: int) -> DataFrame:
    """`shards` partitions by a hash of `key`: every row of one user (or item) in one shard."""
    return frame.repartition(shards, key)


def run_job(frame: DataFrame, job: ShardJob, shards: int, threads: int) -> DataFrame:
    """The job's output rows, one `mapInPandas` task per shard of `frame` by `job.key`."""

    def per_shard(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows = _whole(batches)
        if rows.empty:
            return
        _limit_threads(threads)
        yield job.work(job.load(), rows)

    return _shard_frame(frame, job.key, shards).mapInPandas(per_shard, job.schema)


def measure(frame: DataFrame, job: ShardJob, shards: int, threads: int) -> pd.DataFrame:
    """What each shard of the job costs: one row per shard (TIMING_SCHEMA) with its rows, the seconds
    to load its model and to do its work, rows per second of work, and the worker's peak memory
    (ru_maxrss: the process's peak so far, so an upper bound for a reused worker)."""
    name = job.name

    def per_shard(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        rows = _whole(batches)
        if rows.empty:
            return
        _limit_threads(threads)
        start = time.perf_counter()
        state = job.load()
        loaded = time.perf_counter()
        job.work(state, rows)
        done = time.perf_counter()
        yield pd.DataFrame(
            {
                "stage": [name],
                "shard": [TaskContext.get().partitionId()],
                "rows": [len(rows)],
                "load_seconds": [loaded - start],
                "work_seconds": [done - loaded],
                "rows_per_second": [len(rows) / max(done - loaded, 1e-9)],
                "peak_rss_mb": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024],
            }
        )

    timings = _shard_frame(frame, job.key, shards).mapInPandas(per_shard, TIMING_SCHEMA).toPandas()
    return timings.sort_values("shard", ignore_index=True)


def embed_job(
    settings: Settings, model_dir: Path, key: str, text: str, cache: Path | None = None
) -> ShardJob:
    """Rows (key, text) -> (key, vector): `text_vectors.encode` with the run's encoder, loaded once per shard;
    texts the run's `cache` (scoring/training/text_vectors.py) holds are read from it, as `embed_run`
    reads them, and nothing is written to it."""

    def load() -> Any:
        from scoring.training.embed import encoder

        return encoder(model_dir, settings)

    def work(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        from scoring.training.text_vectors import encode

        def compute(texts: list[str]) -> np.ndarray:
            return encode(model, texts, settings.embed_batch_size, f"{key.removesuffix('_id')}s of a shard")

        texts = rows[text].tolist()
        vectors = TextVectors(cache).vectors(texts, compute, keep=False) if cache else compute(texts)
        return pd.DataFrame({key: rows[key].to_numpy(), "vector": list(vectors)})

    return ShardJob(f"embed_{key}", key, f"{key} string, vector array<float>", load, work)


def _vectors(frame: pd.DataFrame, key: str, order: np.ndarray) -> np.ndarray:
    """The vectors of a (key, vector) frame as one float32 matrix, row i belonging to order[i]."""
    position = pd.Index(frame[key]).get_indexer(order)
    if (position < 0).any():
        raise ValueError(
            f"{int((position < 0).sum())} {key}s have no vector (e.g. {order[position < 0][:3]})"
        )
    return np.stack(frame["vector"].to_numpy()[position]).astype(np.float32)


def candidates_job(
    spark: SparkSession,
    settings: Settings,
    run: RunFolder,
    items: pd.DataFrame,
    item_vectors: np.ndarray,
) -> ShardJob:
    """Rows (user_id, vector) -> the users' merged candidates (`candidates.generate`), with the run's
    recorded source knobs, and the index built here once and broadcast."""
    import faiss

    from retrieval import index as faiss_index

    as_of = _as_of(run)
    budget = stages.budget(
        settings,
        stages.recorded_knobs(run.manifest["stages"]["candidates"]["source_knobs"]),
        embedding=stages.embedding_kept(settings, run.manifest),
    )
    index, _ = faiss_index.build(item_vectors, settings.ann_threshold, k=settings.candidates_k)
    shared = spark.sparkContext.broadcast(
        {
            "lines": stages.purchases(settings),
            "index": faiss.serialize_index(index),
            "item_ids": items["item_id"].to_numpy(),
            "texts": items["text"].to_numpy(),
        }
    )

    def load() -> Any:
        value = shared.value
        catalogue = cand.Catalogue(faiss.deserialize_index(value["index"]), value["item_ids"], value["texts"])
        return value["lines"], catalogue

    def work(state: Any, rows: pd.DataFrame) -> pd.DataFrame:
        lines, catalogue = state
        queries = cand.Queries(
            rows["user_id"].to_numpy(), np.stack(rows["vector"].to_numpy()).astype(np.float32)
        )
        return cand.generate(lines, queries, catalogue, as_of, budget)

    return ShardJob("candidates", "user_id", CANDIDATES_SCHEMA, load, work)


def rank_job(settings: Settings, run: RunFolder) -> ShardJob:
    """Candidate rows -> ranked rows (`stages.score`), with the ranker the run trained, loaded once per
    shard; without the encoder's candidates where the run's embedding gate dropped them, as its rank
    stage scored them."""
    from scoring.ranking import rank

    as_of = _as_of(run)
    kept = stages.embedding_kept(settings, run.manifest)
    root = run.root
    worker_settings = settings.model_copy(update={"engine": "duckdb"})

    def load() -> Any:
        return rank.Ranker.load(root, threads=settings.spark_worker_threads)

    def work(ranker: Any, rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows if kept else cand.without_source(rows, "embedding")
        return stages.score(worker_settings, ranker, rows, as_of)

    return ShardJob("rank", "user_id", RANKED_SCHEMA, load, work)


def lists_job(spark: SparkSession, settings: Settings, run: RunFolder, item_vectors: np.ndarray) -> ShardJob:
    """Ranked rows -> both lists with their reasons (`lists.choose`), the evidence broadcast whole."""
    evidence = replace(lists.evidence(settings, run, _as_of(run)), vectors=item_vectors)
    shared = spark.sparkContext.broadcast(evidence)

    def work(evidence: Any, rows: pd.DataFrame) -> pd.DataFrame:
        return lists.choose(rows, evidence, settings)[lists.COLUMNS]

    return ShardJob("lists", "user_id", RECOMMENDATIONS_SCHEMA, lambda: shared.value, work)


def _as_of(run: RunFolder) -> pd.Timestamp:
    """The scoring time the run's first stage fixed."""
    return pd.Timestamp(run.manifest["stages"]["training_pairs"]["as_of"])


def _write(spark: SparkSession, frame: DataFrame, job: ShardJob, out_dir: Path, settings: Settings) -> dict:
    """Run the job over `frame`'s shards into the Parquet folder `out_dir`; its rows and seconds."""
    start = time.perf_counter()
    run_job(frame, job, settings.spark_shards, settings.spark_worker_threads).write.mode("overwrite").parquet(
        str(out_dir)
    )
    return {
        "rows": spark.read.parquet(str(out_dir)).count(),
        "seconds": round(time.perf_counter() - start, 2),
    }


def rank_and_choose(
    spark: SparkSession,
    settings: Settings,
    run: RunFolder,
    candidates: DataFrame,
    item_vectors: np.ndarray,
    out_dir: Path,
) -> dict:
    """The ranking and lists stages alone, sharded by user: `candidates` (CANDIDATES_SCHEMA rows) ->
    out_dir/ranked/ -> out_dir/recommendations/. Returns rows and seconds per stage."""
    record = {"ranked": _write(spark, candidates, rank_job(settings, run), out_dir / "ranked", settings)}
    ranked = spark.read.parquet(str(out_dir / "ranked"))
    lists = lists_job(spark, settings, run, item_vectors)
    record["recommendations"] = _write(spark, ranked, lists, out_dir / "recommendations", settings)
    return record


def score_sharded(spark: SparkSession, settings: Settings, run_dir: Path, out_dir: Path) -> dict:
    """Score a run folder's users on Spark, shard by shard, into `out_dir`: item_embeddings/,
    user_embeddings/, candidates/, ranked/ and recommendations/ (Parquet folders; recommendations
    in the run folder's `recommendations.parquet` columns). The run must have trained its ranker
    (its rank stage) and recorded its source knobs (its candidates stage). Returns rows and seconds
    per stage."""
    run = RunFolder.open(run_dir)
    record: dict[str, Any] = {
        "shards": settings.spark_shards,
        "worker_threads": settings.spark_worker_threads,
    }
    model_dir = run.path("model")
    for name, file, key, text, cache in (
        ("item_embeddings", "items.parquet", "item_id", "text", run.path(RUN_VECTORS)),
        ("user_embeddings", "users.parquet", "user_id", "query", None),
    ):
        texts = spark.read.parquet(str(run.path(file))).select(key, text)
        record[name] = _write(
            spark, texts, embed_job(settings, model_dir, key, text, cache), out_dir / name, settings
        )
    catalogue = pd.read_parquet(run.path("items.parquet"), columns=["item_id", "text"])
    item_ids = catalogue["item_id"].to_numpy()
    items = spark.read.parquet(str(out_dir / "item_embeddings")).toPandas()
    item_vectors = _vectors(items, "item_id", item_ids)
    users = spark.read.parquet(str(out_dir / "user_embeddings"))
    job = candidates_job(spark, settings, run, catalogue, item_vectors)
    record["candidates"] = _write(spark, users, job, out_dir / "candidates", settings)
    candidates = spark.read.parquet(str(out_dir / "candidates"))
    record.update(rank_and_choose(spark, settings, run, candidates, item_vectors, out_dir))
    return record
