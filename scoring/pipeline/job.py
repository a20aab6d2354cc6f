"""`make score`: the nightly job, from raw data to published recommendations.

Raw data (scoring/ingest) -> a governed build: dbt, feast apply and materialize (scoring/pipeline/build.py)
-> the scoring stages, each reading and writing one run folder (scoring/pipeline/stages.py) -> promote.
The run is promoted and published only after every check passed, so a failure leaves the last
publication intact and a rerun is always safe. The publish gate (scoring/pipeline/gate.py) may refuse a
run whose ranker is worse than the last promoted one or a simple peer: the run is then marked `refused`,
not promoted and not published. Every promoted or refused run gets a line in the run history
(scoring/reports/history.py). The whole job holds the workspace's lock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scoring.ingest.prepare import prepare_raw
from scoring.pipeline import gate
from scoring.pipeline.build import build_features
from scoring.pipeline.lock import workspace_lock
from scoring.pipeline.run_folder import RunFolder, abandon_unfinished, peak_rss_mb, prune
from scoring.pipeline.stages import score_run
from scoring.reports import history
from scoring.settings import Settings
from scoring.training.finetune import RECALL_K

console = Console()


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
    try:
        result = score_run(settings, run_folder)
    except gate.GateRefused as refusal:
        refuse(settings, run_folder, refusal, timings, started)
        raise
    record_times(run_folder, timings, started)
    run_folder.promote(settings.runs_dir)
    history.append(settings, run_folder.manifest)
    prune(settings.runs_dir, settings.keep_runs, protect=settings.runs_dir / "current")
    summary(settings, run_folder, result, timings)
    return run_folder.root


def record_times(run_folder: RunFolder, timings: dict[str, float], started: float) -> None:
    """Each stage's seconds beside the build's, and the whole job's, in the manifest."""
    for name, stage in run_folder.manifest["stages"].items():
        if "seconds" in stage:
            timings[name] = stage["seconds"]
    run_folder.manifest["timings"] = timings
    run_folder.manifest["wall_seconds"] = round(time.perf_counter() - started, 1)


def refuse(
    settings: Settings,
    run_folder: RunFolder,
    refusal: gate.GateRefused,
    timings: dict[str, float],
    started: float,
) -> None:
    """Mark a run the gate refused: `refused` (not `failed`, and never `abandoned` by the next run) with
    the gate's whole record; runs/current and the publication are left as they were."""
    run_folder.manifest["stages"]["gate"] = refusal.record
    run_folder.manifest["status"] = "refused"
    run_folder.manifest["finished_at"] = datetime.now(UTC).isoformat()
    record_times(run_folder, timings, started)
    run_folder.save()
    history.append(settings, run_folder.manifest)


def summary(settings: Settings, run_folder: RunFolder, result: dict, timings: dict[str, float]) -> None:
    metrics = result["metrics"]
    table = Table(title=f"Aisle run {run_folder.run_id} ({settings.source})", show_header=False)
    table.add_row("users scored", f"{result['users']:,}")
    table.add_row("items indexed", f"{result['items']:,}")
    table.add_row("scored as of", str(result["as_of"]))
    table.add_row(
        "fine-tuning loss",
        f"{metrics['loss_first']:.3f} (step 0) -> {metrics['loss_last']:.3f} (step {metrics['steps'] - 1}),"
        f" {metrics['best']}, {metrics['device']}",
    )
    table.add_row("encoder", _encoder_summary(metrics))
    table.add_row("search", _search_summary(run_folder.manifest["stages"]))
    table.add_row("publish gate", gate.summary(run_folder.manifest["stages"].get("gate", {})))
    for name, seconds in timings.items():
        table.add_row(f"time: {name}", f"{seconds:.1f} s")
    table.add_row("peak memory", f"{peak_rss_mb():,.0f} MB")
    table.add_row("recommendations", str(settings.published_recommendations))
    table.add_row("run folder", str(run_folder.root))
    console.print(table)


def _encoder_summary(metrics: dict) -> str:
    """Which encoder the run ships and why, with each task's held-out recall@10 along the way."""
    line = metrics.get("encoder", {}).get("message", "")
    for task, record in metrics.get("held_out", {}).items():
        names = [
            n for n in ("zero_shot", "promoted", "head", "full") if f"recall_at_{RECALL_K}_{n}" in record
        ]
        figures = " / ".join(f"{record[f'recall_at_{RECALL_K}_{n}']:.3f}" for n in names)
        line += f"; {task} {figures} ({' / '.join(names)})"
    return line


def _search_summary(stages: dict) -> str:
    """Head queries and the personalisation comparison, or why the run has no search."""
    rank, head = stages.get("search_rank", {}), stages.get("search_head", {})
    if "skipped" in rank or "skipped" in head or not head:
        return str(rank.get("skipped") or head.get("skipped") or "did not run")
    line = (
        f"{head['head_queries']:,} head queries precomputed ({head['share_of_searches']:.0%} of the last "
        f"{head['window_days']} days' searches)"
    )
    comparison = rank.get("personalisation", {})
    if "personalised" in comparison:
        line += (
            f"; NDCG@10 on held-out logged-in searches {comparison['personalised']['ndcg@10']:.3f} "
            f"personalised vs {comparison['without_user']['ndcg@10']:.3f} without user features"
        )
    return line
