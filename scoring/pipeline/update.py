"""`make update`: what arrived since the last publication, scored with the last promoted run, in minutes.

The nightly `make score` rebuilds everything and trains a new model and ranker; an update between two
nightly runs processes only what is new and trains nothing:

1. An incremental build (scoring/pipeline/build.py): a new build folder seeded with copies of the live
   warehouse, marts, registry and online store; `dbt build` loads only the raw files not loaded yet;
   Feast materializes only the new interval; the same swap as a full build.
2. The users whose data changed (`changes`): each user's fingerprint of order lines and sessions
   (publish.user_inputs) against the one the last publication recorded, plus active users without a
   published list; users no longer active (no history as of the new scoring time) lose theirs.
3. Scoring them with runs/current, the promoted run: items new to the catalogue are embedded with its
   fine-tuned model and added to its FAISS index; the users' histories (as of the new scoring time) are
   embedded by the same model, one at a time, so a user's query vector never depends on who else is
   scored; candidates come from the same sources with the run's tuned knobs, global models fitted on
   everyone's purchases (retrieval/candidates.py); the promoted run's ranking (its ranker, or the peer
   the gate put in its place, rank.load) scores them with Feast's
   features as of the new scoring time; the select stage picks both lists and their reasons.
4. An update run folder (kind `update`, its parent the promoted run) holds the extended items, item
   vectors and index beside hardlinks to every other file of the parent (model, rankers, search), so
   the next update and the server find what they need in runs/current.
5. Publishing: the last publication's lists minus the changed and no-longer-active users, plus the new
   lists, through the same publish.publish as `make score` (online = published; users who should no
   longer have a list are deleted); the candidate pool is upserted the same way and the search results
   are republished unchanged. Then the update run is promoted.

A failure anywhere before publishing leaves the publication and runs/current as they were (the build
may have gone live, as in `make score`; the next update compares with the publication, not the build,
so no change is missed). An update with no changed user publishes nothing and promotes nothing.

`rescore` is the reference the incremental path is held to (tests/test_update.py): a full build and
every active user scored with the promoted run, through the same code.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from retrieval import candidates as cand
from retrieval import index as faiss_index
from scoring.errors import AisleError
from scoring.ingest.prepare import prepare_raw
from scoring.pipeline import lists, publish, stages
from scoring.pipeline.build import BUILD_RECORD, build_features
from scoring.pipeline.lock import workspace_lock
from scoring.pipeline.run_folder import RunFolder, abandon_unfinished, peak_rss_mb, prune
from scoring.ranking import rank
from scoring.search import engine as search_engine
from scoring.search import stages as search
from scoring.settings import Settings
from scoring.training import training_data
from scoring.training.finetune import load_model, pick_device
from scoring.training.text_vectors import encode

console = Console()

KIND = "update"
# The parent's files an update writes anew; every other file of the parent is hardlinked.
REWRITTEN = {
    "manifest.json",
    "items.parquet",
    "item_embeddings.npy",
    "items.faiss",
    "users.parquet",
    "users_embeddings.npy",
    "candidates.parquet",
    "ranked.parquet",
    "recommendations.parquet",
    publish.USER_INPUTS_FILE,
    search_engine.SEARCH_ITEMS,
    search_engine.LEXICAL_DIR,
}


def run(settings: Settings) -> Path:
    """`aisle update`, holding the workspace's lock. Returns the update's run folder (the promoted run's
    own folder when nothing changed)."""
    with workspace_lock(settings.lock_path, "aisle update"):
        return _update(settings, incremental=True)


def rescore(settings: Settings) -> Path:
    """A full build, then every active user scored with the promoted run and published as an update:
    what `run` must equal for the users it scores."""
    with workspace_lock(settings.lock_path, "aisle update --full"):
        return _update(settings, incremental=False)


def promoted(settings: Settings) -> RunFolder:
    """runs/current, the run an update scores with."""
    current = settings.runs_dir / "current"
    if not current.exists():
        raise AisleError(f"no promoted run in {settings.runs_dir}: run `make score` first")
    return RunFolder.open(current.resolve())


def _update(settings: Settings, incremental: bool) -> Path:
    started = time.perf_counter()
    parent = promoted(settings)
    for name in abandon_unfinished(settings.runs_dir):
        console.print(f"[yellow]Run {name} was killed before it finished: its manifest now says abandoned.")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    raw = prepare_raw(settings)
    timings["raw data"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    build = build_features(settings, incremental=incremental)
    timings["build"] = round(time.perf_counter() - t, 2)
    as_of = training_data.scoring_time(settings)
    change = changes(settings, parent, as_of, everyone=not incremental)
    if not change.scored and not change.deleted:
        console.print(f"Nothing changed since run {parent.run_id}: nothing to publish.")
        return parent.root
    run_folder = _create(settings, parent)
    manifest = run_folder.manifest
    manifest.update(kind=KIND, parent=parent.run_id, as_of=str(as_of), raw=raw, build=build.name)
    manifest["build_record"] = json.loads((build / BUILD_RECORD).read_text())
    manifest["users"] = change.describe()
    score_users(settings, parent, run_folder, change, as_of)
    with run_folder.stage("publish") as record:
        record.update(publish_merged(settings, run_folder, change, as_of))
    for name, stage in manifest["stages"].items():
        timings[name] = stage["seconds"]
    manifest["timings"] = timings
    manifest["wall_seconds"] = round(time.perf_counter() - started, 2)
    manifest["peak_rss_mb"] = round(peak_rss_mb(), 1)
    run_folder.promote(settings.runs_dir)
    prune(settings.runs_dir, settings.keep_runs, protect=settings.runs_dir / "current")
    console.print(
        f"Update {run_folder.run_id} (parent {parent.run_id}) as of {as_of}: {len(change.scored)} users "
        f"scored, {len(change.deleted)} lists deleted, {manifest['wall_seconds']:.1f} s"
    )
    return run_folder.root


@dataclass(frozen=True)
class Changes:
    """Who an update scores (changed or newly active users) with their histories as of the new scoring
    time, whose lists it deletes (no longer active), and how many users changed and are active."""

    scored: frozenset[str]
    deleted: frozenset[str]
    queries: pd.DataFrame
    changed: int
    active: int

    def describe(self) -> dict:
        return {
            "changed": self.changed,
            "scored": len(self.scored),
            "deleted": len(self.deleted),
            "active": self.active,
        }


def changes(settings: Settings, parent: RunFolder, as_of: pd.Timestamp, everyone: bool = False) -> Changes:
    """The users to score and the lists to delete, against the last publication.

    A user is scored when their fingerprint (publish.user_inputs) differs from the one the last
    publication recorded, or when they are active without a published list; with `everyone`, every
    active user is. A published user with no history as of `as_of` is no longer active.
    """
    items = pd.read_parquet(parent.path("items.parquet"))
    queries = training_data.user_queries(settings, _extended_texts(settings, items), as_of)
    active = set(queries["user_id"])
    published_users = set(pd.read_parquet(settings.published_recommendations, columns=["user_id"])["user_id"])
    now = publish.user_inputs(settings).set_index("user_id")["fingerprint"]
    recorded = parent.path(publish.USER_INPUTS_FILE)
    if recorded.exists():
        before = pd.read_parquet(recorded).set_index("user_id")["fingerprint"]
        both = pd.concat([now.rename("now"), before.rename("before")], axis=1)
        changed = set(both.index[both["now"].ne(both["before"])])
    else:  # a run published before fingerprints were recorded: everyone is new to it
        changed = set(now.index)
    scored = active if everyone else (changed | (active - published_users)) & active
    return Changes(
        scored=frozenset(scored),
        deleted=frozenset(published_users - active),
        queries=queries[queries["user_id"].isin(scored)].reset_index(drop=True),
        changed=len(changed),
        active=len(active),
    )


def _extended_texts(settings: Settings, items: pd.DataFrame) -> pd.DataFrame:
    """The run's items (their texts as the run embedded them) followed by the catalogue's new items."""
    catalogue = training_data.item_texts(settings)
    new = catalogue[~catalogue["item_id"].isin(set(items["item_id"]))]
    return pd.concat([items[["item_id", "text"]], new], ignore_index=True)


def _create(settings: Settings, parent: RunFolder) -> RunFolder:
    """A new run folder holding hardlinks to the parent's files that an update does not rewrite."""
    run_folder = RunFolder.create(settings.runs_dir, settings.model_dump(mode="json"))
    for path in parent.root.iterdir():
        if path.name in REWRITTEN:
            continue
        target = run_folder.path(path.name)
        if path.is_dir():
            shutil.copytree(path, target, copy_function=os.link)
        else:
            os.link(path, target)
    return run_folder


def score_users(
    settings: Settings, parent: RunFolder, run_folder: RunFolder, change: Changes, as_of: pd.Timestamp
) -> None:
    """Items, queries, candidates, ranking and lists of the changed users, each a timed stage of the
    update's manifest, written to its run folder (the items alone when no user is to be scored: an
    update that only deletes lists)."""
    device = pick_device(settings.device)
    model = load_model(str(parent.path("model")), device, settings.max_seq_length)
    if device.startswith("cuda"):
        model = model.to(dtype=torch.bfloat16)
    with run_folder.stage("items") as record:
        record.update(_extend_items(settings, parent, run_folder, model))
    change.queries.to_parquet(run_folder.path("users.parquet"), index=False)
    if not change.scored:
        return
    with run_folder.stage("queries") as record:
        # One query per batch: a vector must not depend on which other users share its padded batch.
        vectors = encode(model, change.queries["query"].tolist(), 1, "users")
        np.save(run_folder.path("users_embeddings.npy"), vectors)
        record.update(users=len(change.queries))
    with run_folder.stage("candidates") as record:
        items = pd.read_parquet(run_folder.path("items.parquet"))
        catalogue = cand.Catalogue(
            faiss_index.load(run_folder.path("items.faiss")),
            items["item_id"].to_numpy(),
            items["text"].to_numpy(),
        )
        knobs = stages.recorded_knobs(parent.manifest["stages"]["candidates"]["source_knobs"])
        queries = cand.Queries(
            change.queries["user_id"].to_numpy(), np.load(run_folder.path("users_embeddings.npy"))
        )
        lines = stages.purchases(settings)
        embedding = stages.embedding_kept(settings, parent.manifest)
        candidates = cand.generate(
            lines, queries, catalogue, as_of, stages.budget(settings, knobs, embedding=embedding)
        )
        candidates.to_parquet(run_folder.path("candidates.parquet"), index=False)
        record.update(rows=len(candidates), by_source=candidates["source"].value_counts().to_dict())
    with run_folder.stage("rank") as record:
        ranker = rank.load(parent.root, threads=settings.threads)
        ranked = stages.score(settings, ranker, candidates, as_of)
        ranked.to_parquet(run_folder.path("ranked.parquet"), index=False)
        record.update(rows=len(ranked), users=int(ranked["user_id"].nunique()))
    with run_folder.stage("select") as record:
        record.update(lists.select_lists(settings, run_folder, as_of))
    with run_folder.stage("validate") as record:
        recs = pd.read_parquet(run_folder.path("recommendations.parquet"))
        stages.validate(
            recs[recs["list"] == "top"], change.queries["user_id"], items["item_id"], settings.top_n
        )
        record.update(ok=True)


def _extend_items(settings: Settings, parent: RunFolder, run_folder: RunFolder, model) -> dict:
    """The parent's items, vectors and index extended with the catalogue's new items, embedded by the
    parent's model; a parent with search also gets its search catalogue and lexical index rebuilt over
    the extended items, so search's FAISS rows and item rows stay aligned."""
    items = _extended_texts(settings, pd.read_parquet(parent.path("items.parquet")))
    vectors = np.load(parent.path("item_embeddings.npy"))
    new = items.iloc[len(vectors) :]
    index = faiss_index.load(parent.path("items.faiss"))
    if len(new):
        added = encode(model, new["text"].tolist(), settings.embed_batch_size, "new items")
        index.add(added)
        vectors = np.vstack([vectors, added])
    items.to_parquet(run_folder.path("items.parquet"), index=False)
    np.save(run_folder.path("item_embeddings.npy"), vectors)
    faiss_index.save(index, run_folder.path("items.faiss"))
    record = {"items": len(items), "new_items": len(new)}
    if parent.path(search_engine.SEARCH_ITEMS).exists():
        record["search_index"] = search.build_search_index(settings, run_folder)
    return record


def publish_merged(settings: Settings, run_folder: RunFolder, change: Changes, as_of: pd.Timestamp) -> dict:
    """The last publication's lists and candidate pool without the scored and deleted users, plus the
    scored users' new ones, published whole by publish.publish; the search results republished as they
    were. Records the users' fingerprints for the next update."""
    replaced = change.scored | change.deleted
    published = settings.published_dir
    old = pd.read_parquet(settings.published_recommendations)
    recs, pool = old[~old["user_id"].isin(replaced)], _published_pool(settings)
    pool = pool[~pool["user_id"].isin(replaced)]
    if change.scored:
        new = pd.read_parquet(run_folder.path("recommendations.parquet")).assign(run_id=run_folder.run_id)
        recs = pd.concat([recs, new[old.columns]], ignore_index=True)
        ranked = pd.read_parquet(run_folder.path("ranked.parquet"))
        new_pool = publish.candidates_frame(ranked, settings.serve_candidates, run_folder.run_id)
        pool = pd.concat([pool, new_pool], ignore_index=True)
    search_file = published / publish.SEARCH_RESULTS_FILE
    searches = pd.read_parquet(search_file) if search_file.exists() else None
    if searches is not None and searches.empty:
        searches = None
    record = publish.publish(settings, recs, run_folder.run_id, as_of, run_folder.root, searches, pool)
    publish.user_inputs(settings).to_parquet(run_folder.path(publish.USER_INPUTS_FILE), index=False)
    return record


def _published_pool(settings: Settings) -> pd.DataFrame:
    """The published candidate pool (empty when the last publication predates it)."""
    path = settings.published_dir / publish.CANDIDATES_FILE
    return pd.read_parquet(path) if path.exists() else publish.CANDIDATES_SCHEMA.empty_table().to_pandas()
