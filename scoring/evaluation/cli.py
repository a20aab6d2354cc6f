"""`aisle evaluate`: the offline protocol on the real UCI Online Retail data, Aisle against the usual peers.

Aisle runs its whole nightly job (dbt with the protocol's cut, Feast, fine-tuning, retrieval, the learned
ranker) on the data before the cut, in the settings' evaluation profile, unless `--run-dir` names a run
folder to evaluate; then every method is scored on the protocol's users and items
(scoring/evaluation/protocol.py). Writes reports/evaluation.json and reports/evaluation.html.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scoring.evaluation import peers, run_scores
from scoring.evaluation.plots import write_html
from scoring.evaluation.protocol import CUT, K, evaluation_settings, protocol_purchases, score_table, split
from scoring.settings import ROOT, Settings

console = Console()
REPORTS = ROOT / "reports"


def evaluate(run_dir: Path, settings: Settings, raw_path: Path) -> dict:
    """Every method's scores on the protocol's split, and what the run folder says about Aisle."""
    split_ = split(protocol_purchases(raw_path))
    console.print(f"evaluating {len(split_.users):,} users on {len(split_.items):,} items (cut {CUT})")
    base_model = settings.resolved_model_name
    methods = {
        "popularity": lambda: peers.popularity(split_),
        "repurchase_then_popularity": lambda: peers.repurchase_then_popularity(split_),
        "item_knn": lambda: peers.item_knn(split_),
        "implicit_als": lambda: peers.implicit_als(split_),
        "zero_shot_minilm_mean_history": lambda: peers.zero_shot_mean_history(split_, base_model),
        "two_tower_zero_shot": lambda: run_scores.two_tower_zero_shot(run_dir, split_, base_model),
        "two_tower_finetuned": lambda: run_scores.two_tower_scores(run_dir, split_),
        "aisle": lambda: run_scores.aisle_scores(run_dir, split_),
    }
    results = {name: score_table(fn(), split_) for name, fn in methods.items()}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "protocol": {"cut": CUT, "users": int(len(split_.users)), "items": int(len(split_.items)), "k": K},
        "methods": results,
        "candidate_recall": run_scores.candidate_recall(run_dir, split_),
        "ranker_importances": manifest["stages"]["rank"]["importances"],
        "finetune": {k: v for k, v in manifest["stages"]["finetune"].items() if k != "loss_curve"},
        "run_dir": str(run_dir),
    }


def print_table(report: dict) -> None:
    k = report["protocol"]["k"]
    table = Table(
        title=f"Online Retail, cut {report['protocol']['cut']}: {report['protocol']['users']:,} users"
        " (95% bootstrap CI)"
    )
    for column in ("method", f"Recall@{k}", f"NDCG@{k}", f"Recall@{k} novel", f"NDCG@{k} novel"):
        table.add_column(column, justify="left" if column == "method" else "right")
    keys = (f"recall@{k}", f"ndcg@{k}", f"recall@{k}_novel", f"ndcg@{k}_novel")
    for name, metrics in report["methods"].items():
        cells = [
            f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" for m in (metrics[c] for c in keys)
        ]
        table.add_row(name, *cells)
    console.print(table)
    console.print("candidate recall (share of test items among the candidates):", report["candidate_recall"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aisle evaluate", description="Offline evaluation on UCI Online Retail, Aisle against its peers."
    )
    parser.add_argument(
        "--run-dir", type=Path, help="evaluate this run folder instead of running the pipeline"
    )
    args = parser.parse_args(argv)
    settings = evaluation_settings(Settings())
    raw_path = settings.resolved_raw_path
    if not raw_path.exists():
        raise SystemExit(
            f"{raw_path} is missing: aisle evaluate needs the UCI Online Retail file in ../shared."
        )
    if args.run_dir is None:
        from scoring.pipeline.job import run

        run_dir = run(settings)
    else:
        run_dir = args.run_dir
    report = evaluate(run_dir, settings, raw_path)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "evaluation.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    page = write_html(report, REPORTS / "evaluation.html")
    console.print(f"wrote {REPORTS / 'evaluation.json'} and {page}")


if __name__ == "__main__":
    main()
