"""The stages of a scoring run, in order. Each reads its inputs from the run folder (and the live
warehouse and Feast store), writes its outputs there and returns what the manifest records, so any stage
reruns alone from a run folder: `aisle stage rank RUN_DIR` (or fine-tuning on a GPU host from the
folder's Parquet). The label window's candidates are written too (`candidates_label.parquet`), so the
ranker can be retrained from the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval import candidates as cand
from retrieval import index as faiss_index
from scoring.errors import AisleError
from scoring.pipeline import publish
from scoring.pipeline.run_folder import RunFolder
from scoring.ranking import rank
from scoring.search import stages as search
from scoring.settings import Settings
from scoring.training import training_data
from scoring.training.embed import embed_run
from scoring.training.finetune import finetune
from scoring.warehouse import tables


class ValidationError(AisleError):
    """The ranked output broke a publishing check; nothing was published."""


def _times(run: RunFolder) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The run's scoring time and the start of its label window, as the first stage fixed them."""
    record = run.manifest["stages"]["training_pairs"]
    return pd.Timestamp(record["as_of"]), pd.Timestamp(record["label_start"])


def make_pairs(settings: Settings, run: RunFolder) -> dict:
    """Items' texts, training pairs of both tasks ((history, next item) and (query, acted-on item)), and
    the users' queries at both times."""
    items = training_data.item_texts(settings)
    as_of = training_data.scoring_time(settings)
    pairs = training_data.joint_pairs(settings, items, as_of)
    label_start = as_of - pd.Timedelta(days=settings.label_window_days)
    users = training_data.user_queries(settings, items, as_of)
    label_users = training_data.user_queries(settings, items, label_start)
    items.to_parquet(run.path("items.parquet"), index=False)
    pairs.to_parquet(run.path("pairs.parquet"), index=False)
    users.to_parquet(run.path("users.parquet"), index=False)
    label_users.to_parquet(run.path("users_label.parquet"), index=False)
    return {
        "pairs": len(pairs),
        "pairs_by_task": {t: int(n) for t, n in pairs["task"].value_counts().sort_index().items()},
        "items": len(items),
        "users": len(users),
        "as_of": str(as_of),
        "label_start": str(label_start),
        "label_users": len(label_users),
    }


def fine_tune(settings: Settings, run: RunFolder) -> dict:
    metrics = finetune(pd.read_parquet(run.path("pairs.parquet")), settings, run.path("model"))
    return {k: v for k, v in metrics.items() if k != "loss_curve"}


def embed(settings: Settings, run: RunFolder) -> dict:
    return embed_run(run.root, settings)


def build_index(settings: Settings, run: RunFolder) -> dict:
    item_vectors = np.load(run.path("item_embeddings.npy"))
    index, info = faiss_index.build(item_vectors, settings.ann_threshold, k=settings.candidates_k)
    faiss_index.save(index, run.path("items.faiss"))
    return dict(info.__dict__)


def _purchases(settings: Settings) -> pd.DataFrame:
    sql = "select user_id, item_id, ordered_at from fct_order_lines where user_id is not null"
    return tables.read(settings, sql)


def retrieve(settings: Settings, run: RunFolder) -> dict:
    """Candidates for every user as of the scoring time, and as of the label window's start."""
    as_of, label_start = _times(run)
    lines = _purchases(settings)
    items = pd.read_parquet(run.path("items.parquet"))
    catalogue = cand.Catalogue(faiss_index.load(run.path("items.faiss")), items["item_id"].to_numpy())
    budget = cand.Budget(
        k=settings.candidates_k,
        popular_k=settings.popular_k,
        als_dim=settings.als_factors,
        seed=settings.seed,
        als_regularization=settings.als_regularization,
        als_iterations=settings.als_iterations,
        popular_days=settings.popular_window_days,
    )
    frames = {}
    for users_file, at, out in (
        ("users", as_of, "candidates"),
        ("users_label", label_start, "candidates_label"),
    ):
        users = pd.read_parquet(run.path(f"{users_file}.parquet"))
        queries = cand.Queries(users["user_id"].to_numpy(), np.load(run.path(f"{users_file}_embeddings.npy")))
        frame = cand.generate(lines, queries, catalogue, at, budget)
        frame.to_parquet(run.path(f"{out}.parquet"), index=False)
        frames[out] = frame
    candidates = frames["candidates"]
    return {
        "rows": len(candidates),
        "per_user": round(len(candidates) / max(1, candidates["user_id"].nunique()), 1),
        "by_source": candidates["source"].value_counts().to_dict(),
        "label_rows": len(frames["candidates_label"]),
    }


def rank_candidates(settings: Settings, run: RunFolder) -> dict:
    """Train the ranker on the label window, then rank the live candidates and keep the top N."""
    as_of, label_start = _times(run)
    lines = _purchases(settings)
    window = lines[(lines["ordered_at"] >= label_start) & (lines["ordered_at"] < as_of)]
    train = rank.with_features(settings, pd.read_parquet(run.path("candidates_label.parquet")), label_start)
    ranker = rank.Ranker.from_settings(settings).fit(train, rank.labels(train, window))
    ranker.save(run.path("ranker.txt"))
    featured = rank.with_features(settings, pd.read_parquet(run.path("candidates.parquet")), as_of)
    featured["score"] = ranker.predict(featured)
    featured[["user_id", "item_id", "score", "source"]].to_parquet(run.path("ranked.parquet"), index=False)
    recs = rank.top_n(featured, settings.top_n)
    recs.to_parquet(run.path("recommendations.parquet"), index=False)
    return {
        "rows": len(recs),
        "users": int(recs["user_id"].nunique()),
        "ranker": ranker.stats,
        "importances": ranker.importances(),
    }


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


def check(settings: Settings, run: RunFolder) -> dict:
    recs = pd.read_parquet(run.path("recommendations.parquet"))
    users = pd.read_parquet(run.path("users.parquet"), columns=["user_id"])["user_id"]
    items = pd.read_parquet(run.path("items.parquet"), columns=["item_id"])["item_id"]
    validate(recs, users, items, settings.top_n)
    return {"ok": True}


def publish_lists(settings: Settings, run: RunFolder) -> dict:
    as_of, _ = _times(run)
    recs = pd.read_parquet(run.path("recommendations.parquet"))
    return publish.publish(settings, recs, run.run_id, as_of, run.root, search.search_results(run))


STAGES: dict[str, Callable[[Settings, RunFolder], dict]] = {
    "training_pairs": make_pairs,
    "finetune": fine_tune,
    "embed": embed,
    "index": build_index,
    "search_index": search.build_search_index,
    "search_rank": search.train_search_ranker,
    "search_head": search.answer_head_queries,
    "candidates": retrieve,
    "rank": rank_candidates,
    "validate": check,
    "publish": publish_lists,
}


def run_stage(settings: Settings, run: RunFolder, name: str) -> dict:
    """One stage, timed and recorded in the run's manifest."""
    with run.stage(name) as record:
        record.update(STAGES[name](settings, run))
    return record


def score_run(settings: Settings, run: RunFolder) -> dict:
    """Every stage in order. Returns what the summary shows."""
    for name in STAGES:
        run_stage(settings, run, name)
    stages = run.manifest["stages"]
    return {
        "metrics": stages["finetune"],
        "users": stages["training_pairs"]["users"],
        "items": stages["training_pairs"]["items"],
        "as_of": pd.Timestamp(stages["training_pairs"]["as_of"]),
    }


def rerun(run_dir: Path, name: str) -> dict:
    """Rerun one stage of an existing run folder, with the settings the run recorded, from the files the
    earlier stages left there."""
    if name not in STAGES:
        raise AisleError(f"no stage {name!r}: the stages are {', '.join(STAGES)}")
    run = RunFolder.open(run_dir)
    recorded = {key: value for key, value in run.manifest["settings"].items() if key != "serve_token"}
    try:
        return run_stage(Settings(**recorded), run, name)
    except FileNotFoundError as error:
        raise AisleError(
            f"stage {name} reads {error.filename}, which this run folder lacks: rerun the stage that "
            f"writes it first (the stages, in order: {', '.join(STAGES)})"
        ) from None
