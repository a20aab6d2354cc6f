"""Stage `gate`: a run ships only if its ranker is not clearly worse than what is live, or than a simple peer.

Why: the shop's data changes every night and the ranker is retrained every time, so a bad fit (a broken
feature, a label window with few buyers) would otherwise be published silently. The rank stage holds out
a deterministic share of the label window's users (by a hash of the user id) from the ranker's fit and
writes, in the run folder, their label-window candidates (`holdout.parquet`: this run's `score`, every
ranker feature and simple peers' scores as `peer_<name>`) and everything they bought in the window
(`holdout_truth.parquet`). On those same rows the gate measures NDCG@top_n (rank.holdout_ndcg, the
figure the rank stage records) of:
- this run's ranker;
- the last promoted run's ranker (the `ranker*.txt` of `runs/current`, applied to the same rows'
  features). The holdout is chosen by a hash of the user id, so the same users were kept out of that
  ranker's fit too. It is not comparable (and not compared) when its features differ from this run's
  ranker's, or when no run was promoted yet;
- the best simple peer (the best of the `peer_*` columns).
With fewer held-out buyers than `gate_min_users` a difference of a few percent is noise: the figures are
recorded, the outcome is `unjudged` and the run goes through. Otherwise this run's ranker fails when its
NDCG is below either by more than `gate_margin` (relative). Then:
- when the best simple peer beat it and no comparable promoted ranker did at least as well as that peer
  (on a first night there is none), the peer stands in (outcome `peer`; setting `gate_stand_in`): the
  select stage's lists are chosen again from the peer's order, published, and the run is promoted with
  the peer as its ranking (rank.PeerRanker), so a new shop whose ranker cannot yet beat repurchase still
  gets lists;
- otherwise GateRefused stops the run before `publish`, so the last publication and `runs/current` stay
  as they were, and the job marks the run `refused` (scoring/pipeline/job.py).
`force_publish` publishes the ranker's lists anyway, and the manifest says so.
"""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console

from scoring.errors import AisleError
from scoring.pipeline.run_folder import RunFolder
from scoring.ranking import rank
from scoring.settings import Settings

HOLDOUT_FILE = "holdout.parquet"
TRUTH_FILE = "holdout_truth.parquet"
PEER_PREFIX = "peer_"
PROMOTED_RUN = "promoted_run"
BEST_PEER = "best_peer"
# The outcome of a run whose ranker lost to a simple peer that then stood in for it (`stand_in`).
STAND_IN = "peer"
# How the message and the summary name each comparison (then its run id or peer name).
DESCRIBED = {PROMOTED_RUN: "the last promoted run's ranker", BEST_PEER: "the best simple peer"}

console = Console()


class GateRefused(AisleError):
    """The run's ranker fell below the last promoted run's or the best simple peer's by more than the
    margin; nothing was published. `record` is what the manifest keeps of the decision."""

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


def promoted_ranker(settings: Settings, run: RunFolder) -> tuple[rank.Ranker | rank.PeerRanker | None, dict]:
    """The last promoted run's ranker, or None with the reason it is not comparable with this run's."""
    current = settings.runs_dir / "current"
    if not current.exists():
        return None, {"comparable": False, "reason": "no run was promoted yet"}
    run_id = current.resolve().name
    if current.resolve() == run.root.resolve():
        return None, {"run_id": run_id, "comparable": False, "reason": "the promoted run is this run"}
    try:
        promoted = rank.load(current, threads=settings.threads)
    except FileNotFoundError:
        return None, {"run_id": run_id, "comparable": False, "reason": f"run {run_id} kept no ranker"}
    if isinstance(promoted, rank.PeerRanker):  # reads features every run's holdout has
        return promoted, {"run_id": run_id, "comparable": True, "stand_in": promoted.peer}
    theirs = promoted.feature_names()
    ours = rank.Ranker.load(run.root, threads=settings.threads).feature_names()
    if theirs != ours:
        missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        reason = f"its ranker reads other features ({len(theirs)} against this run's {len(ours)}"
        reason += f"; it lacks {', '.join(missing[:5])}" if missing else ""
        reason += f"; this run lacks {', '.join(extra[:5])}" if extra else ""
        return None, {"run_id": run_id, "comparable": False, "reason": reason + ")"}
    return promoted, {"run_id": run_id, "comparable": True}


def _figure(value: float) -> float | None:
    """A figure for the manifest (JSON has no nan)."""
    return None if math.isnan(value) else round(value, 6)


def compare(ours: float, against: str, name: str, theirs: float, margin: float) -> dict:
    """One comparison: this run passes when its NDCG is at least (1 - margin) times the other's."""
    floor = theirs * (1 - margin)
    return {
        "against": against,
        "name": name,
        "comparable": True,
        "ndcg": round(theirs, 6),
        "floor": round(floor, 6),
        "change": round(ours / theirs - 1, 6) if theirs > 0 else None,
        "passed": bool(ours >= floor),
    }


def _not_compared(against: str, name: str | None, reason: str) -> dict:
    return {"against": against, "name": name, "comparable": False, "reason": reason}


def decide(ours: float, promoted: dict, peers: dict[str, float], margin: float) -> list[dict]:
    """The comparisons with the last promoted run (`promoted`: its run_id and `ndcg`, or why it is not
    comparable) and with the best simple peer (`peers`: NDCG by name). A holdout where nobody bought
    anything (every figure nan) judges nothing."""
    if math.isnan(ours):
        reason = "no held-out user bought anything in the label window"
        return [
            _not_compared(PROMOTED_RUN, promoted.get("run_id"), reason),
            _not_compared(BEST_PEER, None, reason),
        ]
    if promoted["comparable"]:
        comparisons = [compare(ours, PROMOTED_RUN, promoted["run_id"], promoted["ndcg"], margin)]
    else:
        comparisons = [_not_compared(PROMOTED_RUN, promoted.get("run_id"), promoted["reason"])]
    if peers:
        best = max(peers, key=lambda peer: (peers[peer], peer))
        comparisons.append(compare(ours, BEST_PEER, best, peers[best], margin))
    else:
        comparisons.append(_not_compared(BEST_PEER, None, "the holdout has no peer scores"))
    return comparisons


def stand_in(record: dict) -> str | None:
    """The best simple peer, when it beat this run's ranker by more than the margin and no comparable
    promoted ranker did at least as well as it on the same holdout: the shop then gets that peer's
    lists, not yesterday's (or, on a first night, none). Otherwise None: the last publication stays."""
    against = {c["against"]: c for c in record["comparisons"]}
    peer, promoted = against[BEST_PEER], against[PROMOTED_RUN]
    if not peer["comparable"] or peer["passed"]:
        return None
    if promoted["comparable"] and promoted["ndcg"] >= peer["ndcg"]:
        return None
    return peer["name"]


def _figures(record: dict) -> str:
    """The holdout's figures and the comparisons this run's ranker failed, as a sentence."""
    failed = [c for c in record["comparisons"] if c["comparable"] and not c["passed"]]
    below = " and ".join(
        f"{DESCRIBED[c['against']]} ({c['name']}: {c['ndcg']:.4f}; this run is {c['change']:+.1%}, "
        f"the floor {c['floor']:.4f})"
        for c in failed
    )
    return (
        f"on the holdout ({record['users']} held-out users' label-window purchases) its ranker's "
        f"NDCG@{record['k']} is {record['ndcg']['this_run']:.4f}, more than the margin of "
        f"{record['margin']:.0%} below {below}."
    )


def stand_in_message(run_id: str, record: dict, peer: str) -> str:
    """One paragraph: the figures, which peer's lists were published instead, what ranks until when."""
    return (
        f"The publish gate put the simple peer {peer} in place of run {run_id}'s ranker: {_figures(record)} "
        f"The run published {peer}'s lists and was promoted with {peer} as its ranking, which `make update` "
        f"uses until a night's ranker passes the gate. To publish this run's ranker anyway, run `aisle "
        f"score --force-publish` (or set AISLE_FORCE_PUBLISH=1)."
    )


def refusal_message(run_id: str, record: dict, forced: bool) -> str:
    """One paragraph: the figures, the margin, which comparison failed, what stays (or that it was
    published by force), how to force."""
    margin = record["margin"]
    figures = _figures(record)
    if forced:
        return (
            f"The publish gate would have refused run {run_id}: {figures} It was published by force_publish."
        )
    last = record["comparisons"][0]["name"]
    stays = f"the last publication (run {last}) stays as it was" if last else "no publication is touched"
    return (
        f"The publish gate refused run {run_id}: {figures} The run was not promoted and nothing was "
        f"published: {stays}. To publish this run anyway, run `aisle score --force-publish` (or set "
        f"AISLE_FORCE_PUBLISH=1); to allow a larger drop, raise AISLE_GATE_MARGIN (now {margin})."
    )


def gate_run(settings: Settings, run: RunFolder) -> dict:
    """The stage: measure, compare, and refuse (raise GateRefused) unless the run passes, a peer stands
    in (scoring/pipeline/stages.py then publishes its lists) or the run is forced."""
    holdout = pd.read_parquet(run.path(HOLDOUT_FILE))
    truth = pd.read_parquet(run.path(TRUTH_FILE), columns=["user_id", "item_id"])
    k, margin = settings.top_n, settings.gate_margin
    ours = rank.holdout_ndcg(holdout, truth, "score", k)
    ranker, promoted = promoted_ranker(settings, run)
    if ranker is not None:
        promoted["ndcg"] = rank.holdout_ndcg(
            holdout.assign(promoted=ranker.predict(holdout)), truth, "promoted", k
        )
    peers = {
        column.removeprefix(PEER_PREFIX): rank.holdout_ndcg(holdout, truth, column, k)
        for column in holdout.columns
        if column.startswith(PEER_PREFIX)
    }
    comparisons = decide(ours, promoted, peers, margin)
    users = int(truth["user_id"].nunique())
    record = {
        "k": k,
        "margin": margin,
        "users": users,
        "min_users": settings.gate_min_users,
        "judged": users >= settings.gate_min_users,
        "rows": len(holdout),
        "ndcg": {
            "this_run": _figure(ours),
            "promoted_run": _figure(promoted["ndcg"]) if "ndcg" in promoted else None,
            "peers": {name: _figure(value) for name, value in sorted(peers.items())},
        },
        "comparisons": comparisons,
        "outcome": "passed",
        "forced": False,
    }
    if not record["judged"]:
        console.print(
            f"[yellow]The publish gate did not judge run {run.run_id}: {users} held-out buyers are fewer "
            f"than gate_min_users ({settings.gate_min_users})."
        )
        return {**record, "outcome": "unjudged"}
    if all(c.get("passed", True) for c in comparisons):  # a reference not comparable judges nothing
        return record
    peer = stand_in(record) if settings.gate_stand_in else None
    if not settings.force_publish and peer is not None:
        message = stand_in_message(run.run_id, record, peer)
        console.print(f"[bold yellow]{message}")
        return {**record, "outcome": STAND_IN, "stand_in": peer, "message": message}
    if not settings.force_publish:
        message = refusal_message(run.run_id, record, forced=False)
        raise GateRefused(message, {**record, "outcome": "refused", "message": message})
    message = refusal_message(run.run_id, record, forced=True)
    console.print(f"[bold yellow]{message}")
    return {**record, "outcome": "forced", "forced": True, "message": message}


def summary(record: dict) -> str:
    """One line for the job's summary table."""
    if not record:
        return "did not run"
    ours = record["ndcg"]["this_run"]
    parts = [f"{record['outcome']}: NDCG@{record['k']} {'n/a' if ours is None else f'{ours:.4f}'}"]
    for c in record["comparisons"]:
        if c["comparable"]:
            parts.append(f"{DESCRIBED[c['against']]} ({c['name']}) {c['ndcg']:.4f}")
        else:
            parts.append(f"{DESCRIBED[c['against']]}: {c['reason']}")
    line = "; ".join(parts) + f" (margin {record['margin']:.0%}, {record['users']} held-out buyers)"
    if record["outcome"] == STAND_IN:
        line += f"; published {record['stand_in']}'s lists in the ranker's place"
    return line
