"""`make score`: the nightly job, from raw data to published recommendations.

Stages: prepare raw data -> dbt build -> feast apply + materialize -> training pairs (Feast,
point in time) -> fine-tune -> embed -> FAISS index -> candidates -> rank -> validate -> publish.
Every stage writes into one run folder; the run is promoted and published only after every check
passed, so a failure leaves the last publication intact and a rerun is always safe.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from retrieval import candidates as cand
from retrieval import index as faiss_index
from scoring import demo_shop, feature_store, publish, rank, raw_contract, training_data, warehouse
from scoring.embed import embed_run
from scoring.errors import AisleError
from scoring.finetune import finetune
from scoring.lock import workspace_lock
from scoring.run_folder import RunFolder, abandon_unfinished, peak_rss_mb, prune, swap_link
from scoring.settings import Settings

console = Console()


class ValidationError(AisleError):
    """The ranked output broke a publishing check; nothing was published."""


def prepare_raw(settings: Settings) -> dict:
    """Generate the demo shop when it is the source and its files are missing or stale."""
    if settings.source != "demo":
        raw_contract.check(settings)
        return {"raw_path": str(settings.resolved_raw_path)}
    out = settings.resolved_raw_path
    params = {
        "n_users": settings.demo_users,
        "n_items": settings.demo_items,
        "days": settings.demo_days,
        "seed": settings.demo_seed,
        "defect_rate": settings.demo_defect_rate,
        "end_date": settings.demo_end_date,
    }
    summary_file = out / "_truth" / "summary.json"
    if summary_file.exists() and json.loads(summary_file.read_text()).get("parameters") == params:
        return {"raw_path": str(out), "generated": False}
    summary = demo_shop.generate(out, **params)
    return {"raw_path": str(out), "generated": True, "rows": summary["row_counts"]}


def build_features(settings: Settings) -> Path:
    """dbt build, feast apply and materialize: the governed features every consumer reads.

    All three write into a new folder under `data/builds`, beside the live one; only when every model,
    every test and the materialization passed do the online store's feature tables and then the
    `data/live` link move to it. A failure anywhere leaves the last good warehouse, marts, registry
    and online store as they were. Returns the build folder.
    """
    root = settings.builds_dir / (datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}")
    staged = settings.for_build(root)
    warehouse.dbt(staged, "build")
    feature_store.apply(staged)
    feature_store.materialize(staged)
    recommendations = feature_store.online_table(staged, feature_store.RECOMMENDATIONS_VIEW)
    feature_store.swap_online_tables(
        settings.online_store_path, staged.online_store_path, keep=frozenset({recommendations})
    )
    staged.online_store_path.unlink()  # its rows are live now
    swap_link(settings.live_dir, root)
    prune(settings.builds_dir, settings.keep_builds, protect=settings.live_dir)
    return root


def validate(recs: pd.DataFrame, users: pd.Series, items: pd.Series, n: int) -> None:
    """Every active user gets n distinct known items (or all items when fewer exist)."""
    expected = min(n, items.nunique())
    counts = recs.groupby("user_id")["item_id"].nunique()
    missing = set(users) - set(counts.index)
    short = counts[counts < expected]
    unknown = set(recs["item_id"]) - set(items)
    problems = []
    if missing:
        problems.append(f"{len(missing)} active users have no recommendations (e.g. {sorted(missing)[:3]})")
    if len(short):
        problems.append(f"{len(short)} users have fewer than {expected} items")
    if unknown:
        problems.append(f"{len(unknown)} recommended items are not in dim_items (e.g. {sorted(unknown)[:3]})")
    if problems:
        raise ValidationError("; ".join(problems))


def score_run(settings: Settings, run: RunFolder) -> dict:
    """Every scoring stage, reading and writing the run folder. Returns what the summary shows."""
    with run.stage("training_pairs") as rec:
        items = training_data.item_texts(settings)
        pairs = training_data.training_pairs(settings, items)
        as_of = training_data.scoring_time(settings)
        label_start = as_of - pd.Timedelta(days=settings.label_window_days)
        users = training_data.user_queries(settings, items, as_of)
        label_users = training_data.user_queries(settings, items, label_start)
        items.to_parquet(run.path("items.parquet"), index=False)
        pairs.to_parquet(run.path("pairs.parquet"), index=False)
        users.to_parquet(run.path("users.parquet"), index=False)
        label_users.to_parquet(run.path("users_label.parquet"), index=False)
        rec.update(
            pairs=len(pairs),
            items=len(items),
            users=len(users),
            as_of=str(as_of),
            label_start=str(label_start),
            label_users=len(label_users),
        )

    with run.stage("finetune") as rec:
        metrics = finetune(pairs, settings, run.path("model"))
        rec.update({k: v for k, v in metrics.items() if k != "loss_curve"})

    with run.stage("embed") as rec:
        rec.update(embed_run(run.root, settings))

    with run.stage("index") as rec:
        item_vectors = np.load(run.path("item_embeddings.npy"))
        index, info = faiss_index.build(item_vectors, settings.ann_threshold, k=settings.candidates_k)
        faiss_index.save(index, run.path("items.faiss"))
        rec.update(info.__dict__)

    with run.stage("candidates") as rec:
        lines = warehouse.read(
            settings, "select user_id, item_id, ordered_at from fct_order_lines where user_id is not null"
        )
        item_ids = items["item_id"].to_numpy()

        def generate(who: pd.DataFrame, vectors: str, at: pd.Timestamp) -> pd.DataFrame:
            return cand.generate(
                lines,
                who["user_id"].to_numpy(),
                np.load(run.path(vectors)),
                index,
                item_ids,
                at,
                settings.candidates_k,
                settings.popular_k,
                settings.als_factors,
                settings.seed,
            )

        candidates = generate(users, "users_embeddings.npy", as_of)
        label_candidates = generate(label_users, "users_label_embeddings.npy", label_start)
        candidates.to_parquet(run.path("candidates.parquet"), index=False)
        rec.update(
            rows=len(candidates),
            per_user=round(len(candidates) / max(1, len(users)), 1),
            by_source=candidates["source"].value_counts().to_dict(),
            label_rows=len(label_candidates),
        )

    with run.stage("rank") as rec:
        window = lines[(lines["ordered_at"] >= label_start) & (lines["ordered_at"] < as_of)]
        train = rank.with_features(settings, label_candidates, label_start)
        ranker = rank.Ranker(objective=settings.ranker_objective, seed=settings.seed).fit(
            train, rank.labels(train, window)
        )
        ranker.save(run.path("ranker.txt"))
        featured = rank.with_features(settings, candidates, as_of)
        featured["score"] = ranker.predict(featured)
        featured[["user_id", "item_id", "score", "source"]].to_parquet(
            run.path("ranked.parquet"), index=False
        )
        recs = rank.top_n(featured, settings.top_n)
        recs.to_parquet(run.path("recommendations.parquet"), index=False)
        rec.update(
            rows=len(recs),
            users=int(recs["user_id"].nunique()),
            ranker=ranker.stats,
            importances=ranker.importances(),
        )

    with run.stage("validate") as rec:
        validate(recs, users["user_id"], items["item_id"], settings.top_n)
        rec.update(ok=True)

    with run.stage("publish") as rec:
        rec.update(publish.publish(settings, recs, run.run_id, as_of, run.root))
    return {"metrics": metrics, "users": len(users), "items": len(items), "as_of": as_of}


def run(settings: Settings) -> Path:
    """The whole nightly job, holding the workspace's lock. Returns the run folder."""
    with workspace_lock(settings.lock_path, "aisle score"):
        return _run(settings)


def _run(settings: Settings) -> Path:
    started = time.perf_counter()
    for name in abandon_unfinished(settings.runs_dir):
        console.print(f"[yellow]Run {name} was killed before it finished: its manifest now says abandoned.")
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t = time.perf_counter()
        console.rule(f"[bold]{name}")
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    raw = timed("raw data", prepare_raw, settings)
    timed("dbt build + feast", build_features, settings)
    run_folder = RunFolder.create(settings.runs_dir, settings.model_dump(mode="json"))
    run_folder.manifest["raw"] = raw
    result = score_run(settings, run_folder)
    for name, stage in run_folder.manifest["stages"].items():
        timings[name] = stage["seconds"]
    run_folder.manifest["timings"] = timings
    run_folder.manifest["wall_seconds"] = round(time.perf_counter() - started, 1)
    run_folder.promote(settings.runs_dir)
    prune(settings.runs_dir, settings.keep_runs, protect=settings.runs_dir / "current")
    summary(settings, run_folder, result, timings)
    return run_folder.root


def summary(settings: Settings, run_folder: RunFolder, result: dict, timings: dict[str, float]) -> None:
    metrics = result["metrics"]
    table = Table(title=f"Aisle run {run_folder.run_id} ({settings.source})", show_header=False)
    table.add_row("users scored", f"{result['users']:,}")
    table.add_row("items indexed", f"{result['items']:,}")
    table.add_row("scored as of", str(result["as_of"]))
    table.add_row(
        "fine-tuning loss",
        f"{metrics['loss_first']:.3f} (step 0) -> {metrics['loss_last']:.3f} (step {metrics['steps'] - 1}),"
        f" {metrics['device']}",
    )
    for name, seconds in timings.items():
        table.add_row(f"time: {name}", f"{seconds:.1f} s")
    table.add_row("peak memory", f"{peak_rss_mb():,.0f} MB")
    table.add_row("recommendations", str(settings.published_recommendations))
    table.add_row("run folder", str(run_folder.root))
    console.print(table)
