"""The per-shard cost of sharded scoring on Spark (scoring/spark/sharded.py): what the scale plan for
100M users (docs/spark.md) is extrapolated from.

Each stage runs alone on a scored run folder's own inputs, so one stage's figure does not carry another's:
item and user embedding over items.parquet and users.parquet, candidates over users.parquet with the run's
user vectors, ranking over the run's candidates.parquet. Per shard: rows, seconds to load the shard's
model (encoder, index, ranker), seconds of work, rows per second of work, and the worker's peak memory.
Figures are measured, never asserted.

    python -m scoring.bench.spark_shards [RUN_DIR] [--shards N] [--users N] [--stages ...]  # prints JSON
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.functions import col

from scoring.pipeline.run_folder import RunFolder
from scoring.settings import Settings
from scoring.spark import sharded
from scoring.spark.session import spark_session


def _summary(timings: pd.DataFrame) -> dict:
    """A stage's shards, and their mean cost (the figures the scale plan multiplies)."""
    return {
        "shards": timings.round(4).to_dict(orient="records"),
        "rows": int(timings["rows"].sum()),
        "seconds_per_shard": round(float((timings["load_seconds"] + timings["work_seconds"]).mean()), 3),
        "load_seconds_per_shard": round(float(timings["load_seconds"].mean()), 3),
        "work_rows_per_second": round(float(timings["rows"].sum() / timings["work_seconds"].sum()), 1),
        "peak_rss_mb": round(float(timings["peak_rss_mb"].max()), 1),
    }


STAGES = ("embed_items", "embed_users", "candidates", "rank")


def bench_spark_shards(
    settings: Settings,
    run_dir: Path,
    shards: int | None = None,
    users: int | None = None,
    stages: tuple[str, ...] = STAGES,
) -> dict:
    """Per-shard cost of embedding (items, users), candidate generation and ranking on the settings'
    Spark master, over a scored run folder's inputs, split into `shards` (default `spark_shards`).
    `users` keeps the first n users (by id) and their candidates, so a big shop's per-shard figures
    come in minutes; the global models inside candidate generation are still fitted on everyone's
    purchases, as in a full run. Embedding stages need only the run's texts and encoder, so they can
    be measured before the run has ranked."""
    spark = spark_session(settings)
    run = RunFolder.open(run_dir)
    shards = shards or settings.spark_shards
    threads = settings.spark_worker_threads
    model_dir = run.path("model")
    items = pd.read_parquet(run.path("items.parquet"))
    people = pd.read_parquet(run.path("users.parquet")).sort_values("user_id")[: users or None]
    chosen = people["user_id"].tolist()

    def frame(name: str) -> tuple[DataFrame, sharded.ShardJob]:
        if name == "embed_items":
            texts = spark.createDataFrame(items[["item_id", "text"]], "item_id string, text string")
            return texts, sharded.embed_job(settings, model_dir, "item_id", "text")
        if name == "embed_users":
            texts = spark.createDataFrame(people[["user_id", "query"]], "user_id string, query string")
            return texts, sharded.embed_job(settings, model_dir, "user_id", "query")
        if name == "candidates":
            everyone = pd.read_parquet(run.path("users.parquet"), columns=["user_id"])["user_id"]
            vectors = pd.DataFrame(
                {"user_id": everyone, "vector": list(np.load(run.path("users_embeddings.npy")))}
            )
            vectors = vectors[vectors["user_id"].isin(chosen)]
            item_vectors = np.load(run.path("item_embeddings.npy"))
            job = sharded.candidates_job(spark, settings, run, items, item_vectors)
            return spark.createDataFrame(vectors, "user_id string, vector array<float>"), job
        candidates = spark.read.parquet(str(run.path("candidates.parquet"))).where(
            col("user_id").isin(chosen)
        )
        return candidates, sharded.rank_job(settings, run)

    measured = {}
    for name in stages:
        data, job = frame(name)
        measured[name] = _summary(sharded.measure(data, job, shards, threads))
    return {
        "run": run.run_id,
        "conditions": {
            "spark_master": settings.spark_master,
            "shards": shards,
            "worker_threads": threads,
            "device": settings.device,
            "host_cpus": os.cpu_count(),
            "items": len(items),
            "users": len(people),
            "candidates_k": settings.candidates_k,
        },
        "stages": measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-shard cost of sharded scoring on Spark (JSON).")
    parser.add_argument("run_dir", type=Path, nargs="?", help="a scored run folder (default: runs/current)")
    parser.add_argument("--shards", type=int, default=None, help="shards per stage (default: spark_shards)")
    parser.add_argument("--users", type=int, default=None, help="measure the first n users only")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to measure")
    args = parser.parse_args()
    run_dir = args.run_dir or (Settings().runs_dir / "current")
    recorded = RunFolder.open(run_dir.resolve()).manifest["settings"]
    settings = Settings(**{key: value for key, value in recorded.items() if key != "serve_token"})
    print(
        json.dumps(
            bench_spark_shards(settings, run_dir.resolve(), args.shards, args.users, tuple(args.stages)),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
