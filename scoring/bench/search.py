"""Search latency: POST /search over HTTP on loopback, beside the in-process floor of each of its parts.

`python -m scoring.bench.search` (part of `make bench`) reuses the workspace of the settings (AISLE_*
environment) when its current run has search, or builds one for real (demo data, dbt, Feast, a scoring
run). It then measures:

- **floors, in process**, on the engine the server loads (scoring/search/engine.py), with torch held to
  `settings.serve_torch_threads` threads as in a server worker: query encoding (the run's fine-tuned
  encoder, one query), lexical search (BM25 over every item, typo correction included), FAISS search
  (the query vector against the item index), hybrid retrieval (both, fused by reciprocal rank), feature
  lookup (the one Feast online read of the query's statistics and the shopper's history), feature
  assembly (the ranker's frame for ~100 candidates), ranking (LightGBM over that frame), and the whole
  `engine.search` for head and tail queries. Query encoding is also timed at 2 threads, the measurement
  behind one torch thread per worker.
- **HTTP**: the server exactly as `make serve` runs it (scoring/serving/server.py: gunicorn, one worker per
  core), loaded by client threads that each hold one keep-alive connection (stdlib http.client, the
  serving benchmark's client, scoring/bench/serving.py), at 1 and at 16 clients. Head requests are
  searches from the demo log whose normalised query is a published head query; tail requests are the
  log's other searches (answered live). Each request carries the searching shopper's user id where the
  log has one, as in the shop. An error is a transport error, a non-200 answer or an answer without items.

Targets (docs/protocols.md, on 2 cores, 1 client): head p99 <= 10 ms, tail p99 <= 40 ms, 0 errors; the
16-client figures are reported as measured (on 2 cores they are mostly queueing). The load average
before and after is recorded, since other work on the host competes with both client and server. The
table is printed and written to reports/bench_search.json.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from scoring.bench.serving import (
    Result,
    _free_port,
    _summarise,
    _timed,
    console,
    http_load,
    latency_cells,
    machine,
)
from scoring.errors import AisleError
from scoring.serving.server import FeatureServer, worker_count
from scoring.settings import ROOT, Settings

REPORT = ROOT / "reports" / "bench_search.json"
TARGET_P99_MS = {"head": 10.0, "tail": 40.0}


def ensure_search_workspace(settings: Settings) -> None:
    """Reuse the workspace when its current run has search; otherwise build and score it for real."""
    from scoring.search.engine import has_search

    current = settings.runs_dir / "current"
    if current.exists() and has_search(current.resolve()):
        return
    from scoring.ingest.prepare import prepare_raw
    from scoring.pipeline.build import build_features
    from scoring.pipeline.job import run

    prepare_raw(settings)
    build_features(settings)
    run(settings)
    if not has_search(current.resolve()):
        raise AisleError(f"the run {current.resolve()} has no search: does the source log searches?")


def searches(settings: Settings, head: set[str]) -> dict[str, pd.DataFrame]:
    """The demo log's searches (normalised query, user id or None), split into head and tail."""
    columns = ["search_id", "query", "user_id"]
    log = pd.read_parquet(settings.marts_dir / "fct_searches.parquet", columns=columns)
    log = log.drop_duplicates("search_id").dropna(subset=["query"])
    log = log[log["query"].str.len() > 0]
    log["user_id"] = log["user_id"].where(log["user_id"].fillna("").str.len() > 0, None)
    is_head = log["query"].isin(head)
    return {"head": log[is_head].reset_index(drop=True), "tail": log[~is_head].reset_index(drop=True)}


def request_bodies(log: pd.DataFrame, count: int, seed: int) -> list[bytes]:
    """`count` search bodies drawn from the log's rows (with replacement), as the shop would send them."""
    rows = log.sample(n=count, replace=True, random_state=seed)
    bodies = []
    for query, user in zip(rows["query"], rows["user_id"], strict=True):
        body: dict[str, Any] = {"query": query, "k": 10}
        if user is not None:
            body["user_id"] = user
        bodies.append(json.dumps(body).encode())
    return bodies


def _answered(payload: bytes) -> bool:
    return bool(json.loads(payload).get("items"))


def floors(settings: Settings, logs: dict[str, pd.DataFrame], count: int) -> list[Result]:
    """Each part of a search, timed alone in this process on the engine the server loads.

    The parts are the engine's own steps, called as `SearchEngine._rank` calls them (a benchmark may look
    inside; tests/test_search_serving.py and the engine's tests keep the whole path honest)."""
    import torch

    from retrieval import index as faiss_index
    from scoring.search import features as sf
    from scoring.search.engine import SearchEngine

    torch.set_num_threads(settings.serve_torch_threads)
    engine = SearchEngine.load(settings)
    run = engine._run
    retriever, pool = run.retriever, settings.search_pool
    tail = logs["tail"].sample(n=count, replace=True, random_state=3)
    queries, users = tail["query"].tolist(), tail["user_id"].tolist()
    vectors = [sf.encode(run.model, [q]) for q in queries]  # also the warm-up
    results: list[Result] = []

    def add(part: str, calls: list[Callable[[], Any]], threads: int = settings.serve_torch_threads) -> None:
        latencies, wall = _timed(calls)
        results.append(_summarise(f"in process, {threads} torch thread(s)", part, 1, 1, latencies, 0, wall))

    add("query encoding", [lambda q=q: sf.encode(run.model, [q]) for q in queries])
    other = 2 if settings.serve_torch_threads == 1 else 1
    with sf.torch_threads(other):
        add("query encoding", [lambda q=q: sf.encode(run.model, [q]) for q in queries], threads=other)
    add("lexical search (BM25 + typo correction)", [lambda q=q: retriever.lexical_scores(q) for q in queries])
    add("FAISS search", [lambda v=v: faiss_index.search(retriever.index, v, pool) for v in vectors])
    add(
        "hybrid retrieval (BM25 + FAISS, fused)",
        [lambda q=q, v=v: retriever.retrieve(q, v[0], pool) for q, v in zip(queries, vectors, strict=True)],
    )
    pairs = list(zip(queries, users, strict=True))
    add(
        "feature lookup (Feast online read: query, user)",
        [lambda q=q, u=u: engine._online(q, u, with_query=True) for q, u in pairs],
    )
    try:  # the engine's feature step, as SearchEngine._rank runs it today; skipped if that has moved
        inputs = [_inputs(engine, run, q, u, v) for q, u, v in zip(queries, users, vectors, strict=True)]
        add("feature assembly (~100 candidates)", [lambda a=a: _assemble(run, a) for a in inputs])
        matrices = [_matrix(run, _assemble(run, a)) for a in inputs]
        add("ranking (LightGBM)", [lambda m=m: run.ranker.model.predict(m, num_threads=1) for m in matrices])
    except (AttributeError, KeyError, TypeError, ImportError) as error:
        console.print(f"[yellow]feature assembly and ranking not timed alone: the engine changed ({error!r})")
    for kind, log in logs.items():
        rows = log.sample(n=count, replace=True, random_state=5)
        calls = [
            lambda q=q, u=u: engine.search(q, user_id=u, k=10)
            for q, u in zip(rows["query"], rows["user_id"], strict=True)
        ]
        add(f"engine.search, {kind} queries", calls)
    return results


def _inputs(engine: Any, run: Any, query: str, user: str | None, vector: np.ndarray) -> tuple:
    """What the engine's feature step reads for one query: its candidates and the online values."""
    from scoring.search import features as sf
    from scoring.search.engine import SHOPPER

    stats, recent = engine._online(query, user, with_query=True)
    found = run.retriever.retrieve(query, vector[0], engine.settings.search_pool)
    found = found.assign(query=query, corrected_query=sf.corrected_query(run.retriever, query))
    histories = None
    if recent is not None:
        found["user_id"] = SHOPPER
        histories = pd.DataFrame({"user_id": [SHOPPER], "recent_item_ids": [recent]})
    stats = None if stats is None else pd.DataFrame([{"query": query, **stats}])
    return found, stats, run.query_items.get(query, sf.EMPTY_QUERY_ITEM_STATS), histories


def _assemble(run: Any, inputs: tuple) -> pd.DataFrame:
    """The ranker's frame, built as `SearchEngine._rank` builds it (scoring.search.features)."""
    from scoring.search import features as sf

    found, stats, query_items, histories = inputs
    return sf.ranking_frame(found, run.catalogue, stats, query_items, run.item_search_stats, histories)


def _matrix(run: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack([frame[name].to_numpy(dtype=float) for name in run.ranker.features])


def sources(host: str, port: int, logs: dict[str, pd.DataFrame]) -> dict[str, dict[str, int]]:
    """How each kind of request was answered (precomputed or live), over one request per distinct query."""
    import http.client

    tally: dict[str, dict[str, int]] = {}
    connection = http.client.HTTPConnection(host, port, timeout=60)
    for kind, log in logs.items():
        counts: Counter[str] = Counter()
        for query in log["query"].drop_duplicates().head(200):
            connection.request("POST", "/search", json.dumps({"query": query}).encode())
            response = connection.getresponse()
            payload = response.read()
            counts[json.loads(payload).get("source", str(response.status))] += 1
        tally[kind] = dict(counts)
    connection.close()
    return tally


def run(requests: int, floor_requests: int, concurrency: list[int]) -> dict[str, Any]:
    # A free port of its own, so the benchmark never collides with a `make serve` already running.
    settings = Settings().model_copy(update={"feast_port": _free_port()})
    ensure_search_workspace(settings)
    load_before = os.getloadavg()
    from scoring.search.engine import SearchEngine

    head = set(SearchEngine.load(settings).head_queries)
    logs = searches(settings, head)
    results = floors(settings, logs, floor_requests)

    with FeatureServer(settings) as server:
        for kind in logs:  # warm-up: every worker answers both kinds before anything is timed
            warm = request_bodies(logs[kind], 100, 1)
            http_load(settings.feast_host, settings.feast_port, warm, 4, "/search", _answered)
        answered_from = sources(settings.feast_host, settings.feast_port, logs)
        memory_before = server.memory_mb()
        for kind, log in logs.items():
            bodies = request_bodies(log, requests, seed=11)
            for clients in concurrency:
                console.print(f"HTTP POST /search, {kind} queries, {clients} clients, {requests:,} requests")
                latencies, errors, wall = http_load(
                    settings.feast_host, settings.feast_port, bodies, clients, "/search", _answered
                )
                results.append(
                    _summarise("HTTP POST /search", f"{kind} queries", 1, clients, latencies, errors, wall)
                )
        assert server.healthy(), "the server did not survive the load"
        memory_after = server.memory_mb()

    targets = {}
    for kind, limit in TARGET_P99_MS.items():
        one = next(r for r in results if r.service == f"{kind} queries" and r.clients == 1)
        targets[kind] = {
            "p99_ms_target": limit,
            "p99_ms": one.p99_ms,
            "errors": one.errors,
            "met": one.p99_ms <= limit and one.errors == 0,
        }
    report = {
        "results": [asdict(r) for r in results],
        "targets": {"what": "HTTP on loopback, 1 client, p99 and 0 errors (docs/protocols.md)", **targets},
        "answered_from": answered_from,
        "server": {
            "workers": worker_count(settings),
            "torch_threads_per_worker": settings.serve_torch_threads,
            "memory_mb_before_after": [memory_before, memory_after],
        },
        "workspace": {
            "data_dir": str(settings.data_dir.resolve()),
            "run": str((settings.runs_dir / "current").resolve().name),
            "head_queries": len(head),
            "logged_searches": {kind: len(log) for kind, log in logs.items()},
            "distinct_queries": {kind: int(log["query"].nunique()) for kind, log in logs.items()},
            "logged_in_share": {
                kind: round(float(log["user_id"].notna().mean()), 3) for kind, log in logs.items()
            },
        },
        "machine": machine(load_before, "torch"),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    show(results, report)
    return report


def show(results: list[Result], report: dict[str, Any]) -> None:
    table = Table(title="Search latency (ms)")
    for column in ("path", "what", "clients", "requests", "errors", "p50", "p95", "p99", "req/s"):
        table.add_column(column, justify="left" if column in ("path", "what") else "right")
    for r in results:
        table.add_row(
            r.path,
            r.service,
            str(r.clients),
            *latency_cells(r),
        )
    console.print(table)
    server, machine = report["server"], report["machine"]
    console.print(
        f"{server['workers']} server workers, {server['torch_threads_per_worker']} torch thread(s) each; "
        f"server memory (MB) before and after the load {server['memory_mb_before_after']}; load average "
        f"before and after {machine['load_average_1m_before_after']} on {machine['cpus']} CPUs. "
        f"Answered from: {report['answered_from']}."
    )
    for kind in TARGET_P99_MS:
        target = report["targets"][kind]
        verdict = "met" if target["met"] else "NOT met"
        console.print(
            f"Target, {kind} queries, 1 client: p99 {target['p99_ms']:.2f} ms "
            f"(<= {target['p99_ms_target']}), {target['errors']} errors: {verdict}."
        )
    console.print(f"Report: {REPORT}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scoring.bench.search", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=2_000, help="HTTP requests per scenario")
    parser.add_argument("--floor-requests", type=int, default=300, help="calls per in-process floor")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent client counts")
    args = parser.parse_args(argv)
    run(args.requests, args.floor_requests, args.clients)


if __name__ == "__main__":
    main()
