"""The publish gate: a run whose ranker is clearly worse than the last promoted run's or the best simple
peer's on its holdout is refused, nothing is published and the manifest says why; a forced publish goes
through and says so. The decision on small frames (unit), then real runs on the tiny workspace."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from scoring.features import feature_store
from scoring.pipeline import gate, stages
from scoring.pipeline.run_folder import RunFolder, abandon_unfinished, swap_link
from scoring.ranking import rank
from scoring.reports import history
from scoring.settings import ROOT, Settings


def test_the_margin_is_relative_and_either_comparison_refuses() -> None:
    promoted = {"run_id": "r1", "comparable": True, "ndcg": 0.40}
    peers = {"popular": 0.20, "decayed_repurchase": 0.30}
    # 5% below 0.40 is 0.38: 0.381 passes both, 0.379 fails against the promoted run only.
    passing = gate.decide(0.381, promoted, peers, margin=0.05)
    assert [c["passed"] for c in passing] == [True, True]
    assert passing[1]["name"] == "decayed_repurchase" and passing[1]["floor"] == pytest.approx(0.285)
    failing = gate.decide(0.379, promoted, peers, margin=0.05)
    assert [(c["against"], c["passed"]) for c in failing] == [
        (gate.PROMOTED_RUN, False),
        (gate.BEST_PEER, True),
    ]
    assert failing[0]["change"] == pytest.approx(0.379 / 0.40 - 1)
    # Without a comparable promoted run, only the best peer judges.
    alone = gate.decide(0.29, {"comparable": False, "reason": "no run was promoted yet"}, peers, margin=0.05)
    assert alone[0] == {
        "against": gate.PROMOTED_RUN,
        "name": None,
        "comparable": False,
        "reason": "no run was promoted yet",
    }
    assert alone[1]["passed"] is True
    assert [c["passed"] for c in gate.decide(0.28, promoted, peers, margin=0.0)] == [False, False]
    # A peer stands in only when it beat this run and no comparable promoted ranker did as well as it.
    assert gate.stand_in({"comparisons": gate.decide(0.25, promoted, peers, 0.05)}) is None
    worse = {**promoted, "ndcg": 0.28}
    assert gate.stand_in({"comparisons": gate.decide(0.25, worse, peers, 0.05)}) == "decayed_repurchase"
    assert gate.stand_in({"comparisons": failing}) is None  # the peer did not beat this run
    assert gate.stand_in({"comparisons": gate.decide(0.2, alone[0], peers, 0.05)}) == "decayed_repurchase"
    # Nobody bought anything: nothing to judge on, nothing refused.
    unjudged = gate.decide(np.nan, promoted, {"popular": np.nan}, 0.05)
    assert [(c["comparable"], c["reason"]) for c in unjudged] == [
        (False, "no held-out user bought anything in the label window")
    ] * 2


def _settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "data", top_n=2, gate_min_users=1, **overrides)


def _run_folder(parent: Path, name: str, holdout: pd.DataFrame, truth: pd.DataFrame) -> RunFolder:
    """A run folder holding only what the gate reads (RunFolder.create names folders by the second)."""
    run = RunFolder(root=parent / name, run_id=name, manifest={"run_id": name, "stages": {}})
    run.root.mkdir(parents=True)
    run.save()
    holdout.to_parquet(run.path(gate.HOLDOUT_FILE), index=False)
    truth.to_parquet(run.path(gate.TRUTH_FILE), index=False)
    return run


def _holdout(scores: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two users with three candidates each; each bought item a, which one peer puts first, the other
    third."""
    holdout = pd.DataFrame(
        {
            "user_id": ["u1"] * 3 + ["u2"] * 3,
            "item_id": ["a", "b", "c"] * 2,
            "label": np.array([1, 0, 0] * 2, dtype=np.int8),
            "score": scores,
            "peer_popular": [0.1, 0.3, 0.2] * 2,
            "peer_decayed_repurchase": [0.9, 0.0, 0.0] * 2,
        }
    )
    truth = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "a"]})
    return holdout, truth


def test_the_stage_puts_the_peer_in_or_refuses_with_a_message_and_a_record_and_force_publishes(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    holdout, truth = _holdout([0.5, 0.9, 0.1] * 2)  # puts the bought item second
    holdout = holdout.assign(f1=[0.9, 0.1, 0.2] * 2, f2=[0.5] * 6)
    run = _run_folder(settings.runs_dir, "r2", holdout, truth)
    _ranker(run.path("ranker.txt"), ["f1", "f2"])
    # No run was promoted yet (a first night): the best peer, which beat this run, stands in.
    record = gate.gate_run(settings, run)
    assert record["outcome"] == "peer" and record["stand_in"] == "decayed_repurchase"
    assert record["ndcg"]["peers"] == {"decayed_repurchase": 1.0, "popular": 0.0}
    assert (
        record["ndcg"]["this_run"] == pytest.approx(1 / np.log2(3))
        and record["users"] == 2
        and record["margin"] == 0.05
    )
    assert record["comparisons"][0]["reason"] == "no run was promoted yet"
    for part in (
        "put the simple peer decayed_repurchase in place of run r2's ranker",
        "NDCG@2 is 0.6309",
        "margin of 5% below the best simple peer (decayed_repurchase: 1.0000; this run is -36.9%",
        "published decayed_repurchase's lists",
        "aisle score --force-publish",
    ):
        assert part in record["message"], part

    # A promoted ranker that does as well as the peer (it puts each bought item first): refused.
    promoted = _run_folder(settings.runs_dir, "r1", holdout, truth)
    _ranker(promoted.path("ranker.txt"), ["f1", "f2"])
    swap_link(settings.runs_dir / "current", promoted.root)
    with pytest.raises(gate.GateRefused) as refused:
        gate.gate_run(settings, run)
    message, record = str(refused.value), refused.value.record
    assert record["outcome"] == "refused" and record["forced"] is False and record["message"] == message
    assert record["ndcg"]["promoted_run"] == pytest.approx(1.0)
    for part in (
        "refused run r2",
        "NDCG@2 is 0.6309",
        "this run is -36.9%",
        "not promoted and nothing was published",
        "the last publication (run r1) stays as it was",
        "aisle score --force-publish",
        "AISLE_FORCE_PUBLISH=1",
        "AISLE_GATE_MARGIN",
    ):
        assert part in message, part
    json.dumps(record, allow_nan=False)  # the manifest holds it as plain JSON

    forced = gate.gate_run(settings.model_copy(update={"force_publish": True}), run)
    assert forced["outcome"] == "forced" and forced["forced"] is True
    assert "published by force_publish" in forced["message"]
    # A margin wide enough lets the same run through, and a good ranker passes at the default margin.
    assert gate.gate_run(settings.model_copy(update={"gate_margin": 0.4}), run)["outcome"] == "passed"
    good = _run_folder(settings.runs_dir, "r3", holdout.assign(score=[0.9, 0.1, 0.5] * 2), truth)
    _ranker(good.path("ranker.txt"), ["f1", "f2"])
    assert gate.gate_run(settings, good)["outcome"] == "passed"
    # Two held-out buyers are too few to judge on at the default gate_min_users: recorded, let through.
    unjudged = gate.gate_run(settings.model_copy(update={"gate_min_users": 50}), run)
    assert unjudged["outcome"] == "unjudged" and unjudged["judged"] is False
    assert unjudged["comparisons"] == record["comparisons"]


def _ranker(path: Path, features: list[str]) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((200, len(features))), columns=features)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    lgb.train(params, lgb.Dataset(frame, label=(frame.iloc[:, 0] > 0.5).astype(int)), 5).save_model(str(path))


def test_the_last_promoted_ranker_is_applied_to_the_same_rows_or_said_not_comparable(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    holdout, truth = _holdout([0.9, 0.1, 0.5] * 2)
    holdout = holdout.assign(f1=[0.9, 0.1, 0.2] * 2, f2=[0.5] * 6, f3=[0.5] * 6)
    promoted = _run_folder(settings.runs_dir, "r1", holdout, truth)
    _ranker(promoted.path("ranker.txt"), ["f1", "f2"])
    swap_link(settings.runs_dir / "current", promoted.root)
    run = _run_folder(settings.runs_dir, "r2", holdout, truth)
    _ranker(run.path("ranker.txt"), ["f1", "f2"])

    record = gate.gate_run(settings, run)
    comparison = record["comparisons"][0]
    assert comparison["name"] == promoted.run_id and comparison["comparable"] is True
    # The promoted ranker learned "f1 high = bought": it puts each user's bought item first.
    assert record["ndcg"]["promoted_run"] == pytest.approx(1.0)

    _ranker(run.path("ranker.txt"), ["f1", "f3"])
    other = gate.gate_run(settings, run)["comparisons"][0]
    assert other["comparable"] is False and "other features" in other["reason"] and "f3" in other["reason"]
    assert gate.promoted_ranker(settings, promoted)[1]["reason"] == "the promoted run is this run"


# ----- real runs on the tiny workspace ---------------------------------------------------------------------
# One ranker that can never split (every leaf needs more rows than the label window has) scores every
# candidate alike: the run is deliberately broken, through the real job and its own settings. One
# fine-tuning step and a short search ranker keep the run short; neither changes what the gate reads.
BROKEN = {
    "gate_min_users": 1,  # the tiny shop has a handful of held-out buyers; judge on them anyway
    "ranker_min_data_in_leaf": 10**9,
    "ranker_split_repeat": False,
    "finetune_steps": 1,
    "search_ranker_rounds": 20,
}


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def copied(scored_workspace: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A copy of the scored session workspace: refused and forced runs leave the session's own alone."""
    settings, _ = scored_workspace
    data_dir = tmp_path_factory.mktemp("gate") / "data"
    shutil.copytree(settings.data_dir, data_dir, symlinks=True, ignore=shutil.ignore_patterns("aisle.lock"))
    return Settings(**{**settings.model_dump(), "data_dir": data_dir})


def _publication(settings: Settings) -> dict[str, str]:
    """A digest of everything a reader of the publication sees: the published files (Parquet, DuckDB), the
    published tables of the Feast online store, and the run `runs/current` names."""
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in settings.published_dir.iterdir()}
    fs = feature_store.store(settings)
    with sqlite3.connect(settings.online_store_path) as con:
        for view in feature_store.PUBLISHED_VIEWS:
            table = feature_store.online_table(fs, view)
            rows = con.execute(f'select * from "{table}" order by entity_key, feature_name').fetchall()
            digests[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    digests["current"] = os.readlink(settings.runs_dir / "current")
    return digests


def _env(settings: Settings, **overrides) -> dict[str, str]:
    values = {**settings.model_dump(mode="json"), **overrides}
    env = {f"AISLE_{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    return {**os.environ, **{k: v for k, v in env.items() if v != "null"}, "AISLE_SERVE_TOKEN": ""}


def test_a_normal_run_goes_through_the_gate_with_its_figures(scored_workspace: tuple[Settings, Path]) -> None:
    _, run_dir = scored_workspace
    manifest = _manifest(run_dir)
    record = manifest["stages"]["gate"]
    # The tiny shop holds fewer held-out buyers than gate_min_users: the figures are recorded, unjudged.
    assert record["judged"] is (record["users"] >= record["min_users"])
    assert record["outcome"] == ("passed" if record["judged"] else "unjudged")
    assert manifest["status"] == "succeeded" and record["forced"] is False
    assert record["users"] > 0 and record["rows"] > 0 and record["margin"] == 0.05
    assert record["ndcg"]["this_run"] > 0 and record["ndcg"]["peers"]
    best = record["comparisons"][1]
    assert best["against"] == gate.BEST_PEER and best["comparable"]
    assert record["ndcg"]["peers"][best["name"]] == max(record["ndcg"]["peers"].values())
    assert list(manifest["stages"]).index("gate") == list(manifest["stages"]).index("publish") - 1


def test_the_promoted_ranker_is_measured_on_the_same_holdout(copied: Settings, tmp_path: Path) -> None:
    """A run with the promoted run's own ranker and holdout ties with it, and passes."""
    current = (copied.runs_dir / "current").resolve()
    run = _run_folder(
        tmp_path, "twin", *(pd.read_parquet(current / f) for f in (gate.HOLDOUT_FILE, gate.TRUTH_FILE))
    )
    for ranker in current.glob("ranker*.txt"):  # one model, or one per segment
        shutil.copy(ranker, run.path(ranker.name))
    record = gate.gate_run(copied, run)
    promoted = record["comparisons"][0]
    assert promoted["name"] == current.name and promoted["comparable"] and promoted["passed"]
    assert record["ndcg"]["promoted_run"] == pytest.approx(record["ndcg"]["this_run"], abs=1e-6)


@pytest.fixture(scope="module")
def broken(copied: Settings) -> dict:
    """`aisle score` with the broken ranker, as a scheduler runs it, on the copied workspace: the result,
    the run folder it left, and what was published and promoted before it."""
    before = _publication(copied)
    promoted = (copied.runs_dir / "current").resolve().name
    runs_before = set(copied.runs_dir.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "scoring", "score"],
        cwd=ROOT,
        env=_env(copied, **BROKEN, gate_stand_in=False),
        capture_output=True,
        text=True,
        timeout=900,
    )
    (run,) = set(copied.runs_dir.iterdir()) - runs_before - {history.path(copied)}
    return {"result": result, "run": run, "before": before, "promoted": promoted}


def test_a_broken_run_is_refused_and_the_last_publication_stays_until_forced(
    copied: Settings, broken: dict
) -> None:
    """With no peer to stand in (gate_stand_in off), nothing is published and the last publication stays."""
    result, refused, promoted = broken["result"], broken["run"], broken["promoted"]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "aisle score: The publish gate refused run" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert _publication(copied) == broken["before"]

    manifest = _manifest(refused)
    record = manifest["stages"]["gate"]
    assert manifest["status"] == "refused" and "publish" not in manifest["stages"]
    assert record["outcome"] == "refused" and record["forced"] is False
    assert " ".join(record["message"].split()) in " ".join(result.stderr.split())
    assert f"the last publication (run {promoted}) stays as it was" in record["message"]
    assert [c["passed"] for c in record["comparisons"] if c["comparable"]] == [False, False]
    assert abandon_unfinished(copied.runs_dir) == []
    assert [(e["run_id"], e["status"]) for e in history.read(copied)][-1] == (refused.name, "refused")

    # Forced, the same run passes the gate and publishes (what `aisle score --force-publish` runs next).
    forced = Settings(**{**copied.model_dump(), **BROKEN, "gate_stand_in": False, "force_publish": True})
    run = RunFolder.open(refused)
    record = stages.run_stage(forced, run, "gate")
    assert record["outcome"] == "forced" and record["forced"] is True
    assert "published by force_publish" in record["message"]
    assert stages.run_stage(forced, run, "publish")["users"] > 0
    assert set(pd.read_parquet(copied.published_recommendations)["run_id"]) == {refused.name}


def test_a_ranker_that_loses_on_a_first_night_publishes_the_best_peers_lists(
    copied: Settings, broken: dict
) -> None:
    """The broken run again, as on a new shop's first night (no run promoted yet): instead of nothing, the
    best simple peer's lists are chosen, checked and published, and the peer becomes the run's ranking."""
    settings, refused = Settings(**{**copied.model_dump(), **BROKEN}), broken["run"]
    (copied.runs_dir / "current").unlink()
    run = RunFolder.open(refused)
    record = stages.run_stage(settings, run, "gate")
    promoted, peer = record["comparisons"]
    assert promoted["comparable"] is False and promoted["reason"] == "no run was promoted yet"
    assert peer["comparable"] and not peer["passed"]
    assert record["outcome"] == gate.STAND_IN == "peer" and record["stand_in"] == peer["name"]
    assert f"put the simple peer {peer['name']} in place of run {refused.name}'s ranker" in record["message"]
    assert "published" in gate.summary(record) and record["validate"] == {"ok": True}

    # Every list is the peer's order of the user's candidates, with the select stage's reasons.
    ranked = pd.read_parquet(run.path("ranked.parquet"))
    expected = rank.PEERS[peer["name"]](ranked)
    np.testing.assert_allclose(ranked["score"], expected)
    recs = pd.read_parquet(run.path("recommendations.parquet"))
    top = recs[recs["list"] == "top"].sort_values(["user_id", "rank"])
    assert top.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    assert recs["reason"].str.len().gt(0).all()
    assert isinstance(rank.load(run.root), rank.PeerRanker)

    assert stages.run_stage(settings, run, "publish")["users"] == top["user_id"].nunique()
    assert set(pd.read_parquet(copied.published_recommendations)["run_id"]) == {refused.name}
    # Promoted, the peer is what the next night's gate (and `make update`) reads as the run's ranking.
    run.promote(copied.runs_dir)
    ranker, described = gate.promoted_ranker(copied, RunFolder.create(copied.runs_dir, {}))
    assert isinstance(ranker, rank.PeerRanker) and described["stand_in"] == peer["name"]
