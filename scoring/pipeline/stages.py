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
from sklearn.metrics import roc_auc_score

from retrieval import candidates as cand
from retrieval import index as faiss_index
from retrieval import item_models
from scoring.errors import AisleError
from scoring.evaluation import tuning
from scoring.pipeline import gate, lists, publish
from scoring.pipeline.run_folder import RunFolder, promoted_other_than
from scoring.ranking import rank
from scoring.reports.monitor import monitor_run
from scoring.search import stages as search
from scoring.settings import Settings
from scoring.training import training_data
from scoring.training.embed import embed_run
from scoring.training.finetune import finetune
from scoring.training.holdout import held_out
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
    window_days = training_data.label_window_days(settings, as_of)
    label_start = as_of - pd.Timedelta(days=window_days)
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
        "label_window_days": window_days,
        "label_users": len(label_users),
    }


def fine_tune(settings: Settings, run: RunFolder) -> dict:
    metrics = finetune(
        pd.read_parquet(run.path("pairs.parquet")),
        settings,
        run.path("model"),
        incumbent=_promoted_model(settings, run),
    )
    return {k: v for k, v in metrics.items() if k != "loss_curve"}


def _promoted_model(settings: Settings, run: RunFolder) -> Path | None:
    """The model in production (the promoted run's), which tonight's fine-tune must beat; None on a first
    night, for a stage rerun in the promoted run's own folder, or without settings.finetune_from_promoted."""
    promoted = promoted_other_than(settings.runs_dir, run.root)
    if not settings.finetune_from_promoted or promoted is None:
        return None
    model = promoted / "model"
    return model if (model / "modules.json").exists() else None


def embed(settings: Settings, run: RunFolder) -> dict:
    return embed_run(run.root, settings)


def build_index(settings: Settings, run: RunFolder) -> dict:
    item_vectors = np.load(run.path("item_embeddings.npy"))
    index, info = faiss_index.build(item_vectors, settings.ann_threshold, k=settings.candidates_k)
    faiss_index.save(index, run.path("items.faiss"))
    return dict(info.__dict__)


def purchases(settings: Settings) -> pd.DataFrame:
    """Every clean purchase line with a user: what the candidate sources are fitted on. In a fixed order,
    as the sources sum float scores in row order, and an incremental build and a full rebuild store the
    mart's rows in different orders."""
    sql = """
        select user_id, item_id, ordered_at from fct_order_lines where user_id is not null
        order by user_id, item_id, ordered_at
    """
    return tables.read(settings, sql)


def _source_knobs(
    settings: Settings, lines: pd.DataFrame, label_start: pd.Timestamp, run: Path
) -> tuple[dict, dict]:
    """EASE's lambda, the repurchase half-life and TIFU-KNN's knobs: the settings' values, or with
    `tune_sources` the ones that did best on the label window (scoring/evaluation/tuning.py), or the
    promoted run's while the purchases barely moved since it tuned them (`_reusable_tuning`). Returns
    the knobs and what the manifest records of their tuning."""
    knobs = {
        "ease": settings.ease_lambda,
        "decayed_repurchase": settings.repurchase_half_life_days,
        "tifu_knn": item_models.TifuParams(
            neighbours=settings.tifu_neighbours,
            alpha=settings.tifu_alpha,
            r_basket=settings.tifu_r_basket,
            r_group=settings.tifu_r_group,
            group_size=settings.tifu_group_size,
        ),
    }
    if not settings.tune_sources:
        return knobs, {"tuned": False}
    inputs = {
        "label_start": str(label_start),
        "lines": len(lines),
        "top_n": settings.top_n,
        "ease_max_items": settings.ease_max_items,
    }
    reusable = _reusable_tuning(settings, inputs, run)
    if reusable is not None:
        run_id, record = reusable
        return recorded_knobs(record["source_knobs"]), {
            "tuned": False,
            "tuned_on": record["tuning"]["tuned_on"],
            "reused_from": run_id,
        }
    knobs.update(tuning.tune_on_window(lines, label_start, settings.top_n, settings.ease_max_items))
    return knobs, {"tuned": True, "tuned_on": inputs, "reused_from": None}


def _reusable_tuning(settings: Settings, inputs: dict, run: Path) -> tuple[str, dict] | None:
    """The promoted run's id and candidates record when its knobs may serve this run untuned: tuned with
    the same list length and EASE head, at most `retune_max_days` before this label window (never
    after it), on a count of purchase lines within `retune_min_change` of today's. Tuning every grid
    point is most of the candidates stage, while one night adds a fraction of a percent of the lines
    and moves the best knobs rarely; the knobs are retuned once the data or the window has moved. A
    stage rerun in the promoted run's own folder (`run`) tunes again."""
    folder = promoted_other_than(settings.runs_dir, run)
    if settings.retune_max_days <= 0 or folder is None:
        return None
    promoted = RunFolder.open(folder)
    record = promoted.manifest.get("stages", {}).get("candidates", {})
    tuned_on = record.get("tuning", {}).get("tuned_on")
    if not tuned_on or "source_knobs" not in record:
        return None
    age = pd.Timestamp(inputs["label_start"]) - pd.Timestamp(tuned_on["label_start"])
    same = all(tuned_on[key] == inputs[key] for key in ("top_n", "ease_max_items"))
    moved = abs(inputs["lines"] - tuned_on["lines"]) / max(tuned_on["lines"], 1)
    if (
        same
        and pd.Timedelta(0) <= age <= pd.Timedelta(days=settings.retune_max_days)
        and (moved <= settings.retune_min_change)
    ):
        return promoted.run_id, record
    return None


def recorded_knobs(record: dict) -> dict:
    """The source knobs a run's candidates stage chose (its manifest's `source_knobs`), for scoring more
    users with the same sources without tuning again (`make update`)."""
    return {
        "ease": record["ease"]["value"],
        "decayed_repurchase": record["decayed_repurchase"]["value"],
        "tifu_knn": item_models.TifuParams(**record["tifu_knn"]),
    }


def budget(settings: Settings, knobs: dict, embedding: bool | None = None) -> cand.Budget:
    """The candidate sources' budget and knobs; `embedding` (by default: unless the settings say never)
    whether the encoder's candidates are a source."""
    return cand.Budget(
        k=settings.candidates_k,
        popular_k=settings.popular_k,
        als_dim=settings.als_factors,
        seed=settings.seed,
        als_regularization=settings.als_regularization,
        als_iterations=settings.als_iterations,
        popular_days=settings.popular_window_days,
        half_life_days=knobs["decayed_repurchase"],
        ease_lambda=knobs["ease"],
        ease_max_items=settings.ease_max_items,
        tifu=knobs["tifu_knn"],
        embedding=settings.embedding_candidates != "never" if embedding is None else embedding,
        content_k=settings.content_candidates_k,
        title_neighbours=settings.title_neighbours,
    )


def retrieve(settings: Settings, run: RunFolder) -> dict:
    """Candidates for every user as of the scoring time, and as of the label window's start."""
    as_of, label_start = _times(run)
    lines = purchases(settings)
    items = pd.read_parquet(run.path("items.parquet"))
    catalogue = cand.Catalogue(
        faiss_index.load(run.path("items.faiss")), items["item_id"].to_numpy(), items["text"].to_numpy()
    )
    knobs, tuned = _source_knobs(settings, lines[lines["ordered_at"] < as_of], label_start, run.root)
    frames = {}
    for users_file, at, out in (
        ("users", as_of, "candidates"),
        ("users_label", label_start, "candidates_label"),
    ):
        users = pd.read_parquet(run.path(f"{users_file}.parquet"))
        queries = cand.Queries(users["user_id"].to_numpy(), np.load(run.path(f"{users_file}_embeddings.npy")))
        frame = cand.generate(lines, queries, catalogue, at, budget(settings, knobs))
        frame.to_parquet(run.path(f"{out}.parquet"), index=False)
        frames[out] = frame
    candidates = frames["candidates"]
    return {
        "source_knobs": {name: tuning.describe(value) for name, value in knobs.items()},
        "tuning": tuned,
        "rows": len(candidates),
        "per_user": round(len(candidates) / max(1, candidates["user_id"].nunique()), 1),
        "by_source": candidates["source"].value_counts().to_dict(),
        "label_rows": len(frames["candidates_label"]),
    }


def rank_candidates(settings: Settings, run: RunFolder) -> dict:
    """Train the ranker on the label window (bar the held-out users), measure it on the held-out users,
    then score every live candidate: ranked.parquet, which the select stage turns into lists. With
    `embedding_candidates` gated, a ranker is also fitted without the encoder's candidates, and the
    encoder's stay only if the ranker fitted with them has the better NDCG on the held-out users (on
    Online Retail they cost both cuts NDCG, docs/evaluation.md); otherwise they leave the live
    candidates too, and `make update` and the Spark shards generate none (`embedding_kept`)."""
    as_of, label_start = _times(run)
    lines = purchases(settings)
    window = lines[(lines["ordered_at"] >= label_start) & (lines["ordered_at"] < as_of)]
    labelled = pd.read_parquet(run.path("candidates_label.parquet"))
    variants = {"with": labelled}
    if settings.embedding_candidates == "gated":
        variants["without"] = cand.without_source(labelled, "embedding")
    fits = {}
    for name, frame in variants.items():
        train = rank.with_features(settings, frame, label_start)
        label = rank.labels(train, window)
        held = held_out(train["user_id"], settings.holdout_share)
        ranker = rank.Ranker.from_settings(settings).fit(train[~held], label[~held])
        fits[name] = (train, label, held, ranker)
    gate_record = _embedding_gate(fits, window, settings.top_n) if len(fits) > 1 else None
    chosen = "with" if gate_record is None or gate_record["kept"] else "without"
    train, label, held, ranker = fits[chosen]
    ranker.save(run.root)
    holdout = _holdout(train[held].assign(label=label[held]), ranker, window, run, settings.top_n)
    live = pd.read_parquet(run.path("candidates.parquet"))
    if chosen == "without":
        live = cand.without_source(live, "embedding")
    ranked = score(settings, ranker, live, as_of)
    ranked.to_parquet(run.path("ranked.parquet"), index=False)
    return {
        "rows": len(ranked),
        "users": int(ranked["user_id"].nunique()),
        "ranker": ranker.stats,
        "holdout": holdout,
        "embedding_gate": gate_record,
        "importances": ranker.importances(),
    }


def _embedding_gate(fits: dict, window: pd.DataFrame, k: int) -> dict:
    """Each variant's NDCG@k on its held-out users (the same users: held out by id), and whether the
    encoder's candidates are kept: only when the ranker fitted with them is strictly better."""
    ndcg = {}
    for name, (train, _, held, ranker) in fits.items():
        scored = train[held].assign(score=ranker.predict(train[held]) if held.any() else [])
        truth = window[window["user_id"].isin(set(scored["user_id"]))][["user_id", "item_id"]]
        ndcg[name] = round(rank.holdout_ndcg(scored, truth.drop_duplicates(), "score", k), 4)
    return {
        "holdout_ndcg_with": ndcg["with"],
        "holdout_ndcg_without": ndcg["without"],
        "kept": bool(ndcg["with"] > ndcg["without"]),
    }


def embedding_kept(settings: Settings, manifest: dict) -> bool:
    """Whether a run's ranker reads the encoder's candidates: what its rank stage's gate decided (a run
    from before the gate: yes), unless the settings say always or never."""
    if settings.embedding_candidates != "gated":
        return settings.embedding_candidates == "always"
    gate_record = manifest["stages"]["rank"].get("embedding_gate") or {}
    return bool(gate_record.get("kept", True))


def score(
    settings: Settings, ranker: rank.Ranker | rank.PeerRanker, candidates: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """The ranker's score of every candidate with its features as of `as_of`: ranked.parquet's rows."""
    featured = rank.with_features(settings, candidates, as_of)
    featured["score"] = ranker.predict(featured)
    categories = tables.read(settings, "select item_id, category from dim_items")
    ranked = featured.assign(
        times_bought=featured["times_bought"].fillna(0).astype(int),
        last_bought_days=featured["item_recency_days"],
    ).merge(categories, on="item_id", how="left")
    columns = ["user_id", "item_id", "score", "source", *cand.SOURCES, "times_bought", "last_bought_days"]
    return ranked[[*columns, "category"]]


def _holdout(frame: pd.DataFrame, ranker: rank.Ranker, window: pd.DataFrame, run: RunFolder, k: int) -> dict:
    """Score the held-out users' label-window candidates, write them with the simple peers' scores for
    the gate (holdout.parquet, holdout_truth.parquet), and measure the ranker on them. The simple peers
    are rank.PEERS."""
    frame = frame.assign(
        score=ranker.predict(frame) if len(frame) else [],
        **{f"{gate.PEER_PREFIX}{name}": peer(frame) for name, peer in rank.PEERS.items()},
    )
    truth = window[window["user_id"].isin(set(frame["user_id"]))][["user_id", "item_id"]].drop_duplicates()
    frame.to_parquet(run.path("holdout.parquet"), index=False)
    truth.to_parquet(run.path("holdout_truth.parquet"), index=False)
    if frame.empty or truth.empty:
        return {"users": 0}
    labels = frame["label"].to_numpy()
    auc = roc_auc_score(labels, frame["score"]) if 0 < labels.sum() < len(labels) else float("nan")
    return {
        "users": int(truth["user_id"].nunique()),
        "auc": round(float(auc), 4),
        "k": k,
        "ndcg": round(rank.holdout_ndcg(frame, truth, "score", k), 4),
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
    """The top list is what every active user must get; the discover list may be short or empty."""
    recs = pd.read_parquet(run.path("recommendations.parquet"))
    recs = recs[recs["list"] == "top"]
    users = pd.read_parquet(run.path("users.parquet"), columns=["user_id"])["user_id"]
    items = pd.read_parquet(run.path("items.parquet"), columns=["item_id"])["item_id"]
    validate(recs, users, items, settings.top_n)
    return {"ok": True}


def gate_lists(settings: Settings, run: RunFolder) -> dict:
    """The publish gate (scoring/pipeline/gate.py); when it puts a simple peer in place of the ranker,
    the peer ranks every live candidate, both lists are chosen again from its order and checked, and the
    peer is saved as the run's ranking (what `make update` reads) beside the ranker that lost."""
    record = gate.gate_run(settings, run)
    if record["outcome"] != gate.STAND_IN:
        return record
    peer = rank.PeerRanker(record["stand_in"])
    ranked = pd.read_parquet(run.path("ranked.parquet"))
    ranked.assign(score=peer.predict(ranked)).to_parquet(run.path("ranked.parquet"), index=False)
    peer.save(run.root)
    record["select"] = lists.select_lists(settings, run)
    record["validate"] = check(settings, run)
    return record


def publish_lists(settings: Settings, run: RunFolder) -> dict:
    """Publish the run's lists and candidate pool, and record each user's inputs (publish.user_inputs)
    so the next `make update` knows whose data changed since."""
    as_of, _ = _times(run)
    publish.user_inputs(settings).to_parquet(run.path(publish.USER_INPUTS_FILE), index=False)
    recs = pd.read_parquet(run.path("recommendations.parquet"))
    pool = publish.candidates_frame(
        pd.read_parquet(run.path("ranked.parquet")), settings.serve_candidates, run.run_id
    )
    return publish.publish(settings, recs, run.run_id, as_of, run.root, search.search_results(run), pool)


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
    "select": lists.select_lists,
    "validate": check,
    "monitor": monitor_run,
    "gate": gate_lists,
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
