"""`make bench` (`aisle bench`): the speed and memory figures of the README's targets, measured, never
asserted in tests.

- embedding: Aisle's `text_vectors.encode` against raw `SentenceTransformer.encode` on the same texts and
  batch size (target: at least 95% of raw throughput);
- retrieval: exact inner-product search against IVF at the size where Aisle would switch, with
  recall@100 of IVF against exact (target: ANN only with recall@100 >= 0.98);
- dbt build on synthetic demo shops of about 1M, 3M and 10M events: wall time and peak memory of the
  dbt process (target: < 8 GB at 10M, about linear time);
- Feast online lookups over HTTP: scoring/bench/serving.py (reports/bench_serving.json);
- POST /search over HTTP, head and tail queries, beside the in-process floor of each of its parts:
  scoring/bench/search.py (reports/bench_search.json);
- POST /recommend p50/p95/p99 at 1 and 16 clients and push-to-serve freshness (POST /events to the
  first /recommend answer that reflects it): scoring/bench/serving.py's real-time part
  (reports/bench_realtime.json);
- on Online Retail, the last day through `make update` against a full `make score` of the same data,
  wall time and peak memory: scoring/bench/update.py (reports/bench_update.json);
- `make score` on a 50,000-item grocery demo shop, two nights, each night's stage profile and peak
  memory: scoring/bench/catalogue.py (reports/bench_catalogue.json).

Results go to reports/bench.json (the real-time and update figures too). Sizes can be reduced with
--quick; `--only` runs some parts alone (`python -m scoring bench --only recommend update`), and their
figures replace those parts' in reports/bench.json, the others kept.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from scoring.bench import catalogue as bench_catalogue
from scoring.bench import search as bench_search
from scoring.bench import serving as bench_serving
from scoring.bench import update as bench_update
from scoring.settings import ROOT, Settings


def bench_embedding(settings: Settings, n_texts: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from scoring.training.text_vectors import encode

    words = ["red", "blue", "ceramic", "glass", "mug", "lantern", "cushion", "cover", "vintage", "heart"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 7))) for _ in range(n_texts)]
    model = SentenceTransformer(settings.resolved_model_name, device="cpu")
    batch = settings.embed_batch_size
    model.encode(texts[:batch], batch_size=batch)  # warm-up
    start = time.perf_counter()
    model.encode(texts, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True)
    raw = time.perf_counter() - start
    start = time.perf_counter()
    encode(model, texts, batch, "bench texts")
    ours = time.perf_counter() - start
    return {
        "texts": n_texts,
        "batch_size": batch,
        "raw_texts_per_s": round(n_texts / raw, 1),
        "aisle_texts_per_s": round(n_texts / ours, 1),
        "ratio": round(raw / ours, 3),
    }


def bench_retrieval(n_items: int, n_queries: int, dim: int = 384) -> dict:
    from retrieval import index as faiss_index

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(64, dim)).astype(np.float32)
    items = centres[rng.integers(0, 64, n_items)] + 0.5 * rng.normal(size=(n_items, dim)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    queries = items[rng.choice(n_items, n_queries, replace=False)] + 0.1 * rng.normal(size=(n_queries, dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact, _ = faiss_index.build(items, ann_threshold=n_items)
    start = time.perf_counter()
    _, truth = faiss_index.search(exact, queries, 100)
    exact_s = time.perf_counter() - start
    ivf, info = faiss_index.build(items, ann_threshold=0, k=100)
    start = time.perf_counter()
    _, found = faiss_index.search(ivf, queries, 100)
    ivf_s = time.perf_counter() - start
    return {
        "items": n_items,
        "queries": n_queries,
        "exact_queries_per_s": round(n_queries / exact_s, 1),
        "ivf_queries_per_s": round(n_queries / ivf_s, 1),
        "ivf_nprobe": info.nprobe,
        "ivf_recall_at_100": round(faiss_index.recall_at_k(found, truth), 4),
    }


def bench_dbt(base: Settings, users: list[int], engines: list[str]) -> list[dict]:
    """`dbt build` of synthetic demo shops on each engine: the same raw files, one warehouse per engine.

    Spark runs dbt-spark's session method on a local PySpark (`spark_master`, local[2] by default), so
    its figures include starting the JVM, as a nightly job on one machine would pay it.
    """
    from scoring.ingest.demo_shop import generate
    from scoring.warehouse import dbt

    rows = []
    for n_users in users:
        folder = ROOT / "data" / "bench" / f"u{n_users}"
        raw = folder / "raw"
        summary = generate(raw, n_users=n_users, n_items=600, days=180, seed=7)
        for engine in engines:
            settings = base.model_copy(
                update={"source": "demo", "raw_path": raw, "data_dir": folder / engine, "engine": engine}
            )
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            dbt.run(settings, "build", "--quiet")
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            rows.append(
                {
                    "engine": engine,
                    "events": summary["row_counts"]["events.parquet"],
                    "seconds": round(seconds, 1),
                    # ru_maxrss of children is the largest child so far: exact when sizes grow. A Spark
                    # build's child is dbt with the driver JVM it started (local mode: executors inside).
                    "peak_rss_gb": round(max(peak, before) / 1024**2, 2),
                }
            )
            print(rows[-1])
    return rows


PARTS = ("embedding", "retrieval", "dbt", "lookups", "search", "recommend", "update", "catalogue")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aisle bench", description="Aisle's speed and memory benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="run these parts alone (lookups: Feast over HTTP; recommend: /recommend and freshness; "
        "update: make update against make score on Online Retail; catalogue: make score on a "
        "50,000-item demo)",
    )
    parser.add_argument(
        "--update-reference",
        choices=["full", "base"],
        default="full",
        help="the update's reference: make score of every day (full), or the update's base run (base)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=["duckdb", "spark"],
        default=["duckdb"],
        help="dbt build on these engines (spark: the optional extra, local[2]; docs/spark.md)",
    )
    parser.add_argument(
        "--dbt-users",
        nargs="+",
        type=int,
        help="the demo shops' sizes in users (about 53 events each; default 19,000, 57,000 and 190,000)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    results: dict = {}
    if "embedding" in args.only:
        print("embedding throughput ...")
        results["embedding"] = bench_embedding(settings, 2_000 if args.quick else 10_000)
        print(results["embedding"])
    if "retrieval" in args.only:
        print("retrieval, exact against IVF ...")
        results["retrieval"] = bench_retrieval(20_000 if args.quick else 200_000, 1_000)
        print(results["retrieval"])
    if "dbt" in args.only:
        print("dbt build scaling ...")
        results["dbt_build"] = bench_dbt(
            settings,
            args.dbt_users or ([2_000, 6_000] if args.quick else [19_000, 57_000, 190_000]),
            args.engines,
        )
    if "lookups" in args.only:
        print("Feast online lookups over HTTP ...")
        bench_serving.main(["--parts", "lookups"])
    if "search" in args.only:
        print("POST /search over HTTP ...")
        bench_search.main(["--requests", "500", "--floor-requests", "100"] if args.quick else [])
    if "recommend" in args.only:
        print("POST /recommend over HTTP and push-to-serve freshness ...")
        requests, trials = (500, 20) if args.quick else (5_000, 100)
        results["realtime"] = bench_serving.run_realtime(requests, trials, [1, 16])
    if "update" in args.only:
        print("make update against make score on Online Retail ...")
        results["update"] = bench_update.run("online_retail", args.update_reference)
    if "catalogue" in args.only:
        print("make score on a 50,000-item demo shop ...")
        results["catalogue"] = bench_catalogue.run(5_000 if args.quick else 50_000, nights=2)
    out = ROOT / "reports"
    out.mkdir(exist_ok=True)
    if set(args.only) != set(PARTS) and (out / "bench.json").exists():
        results = json.loads((out / "bench.json").read_text()) | results
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
