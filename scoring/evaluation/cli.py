"""`aisle evaluate`: the offline protocol, Aisle against the field's peers, on each cut of a shop's
purchases (UCI Online Retail by default; the grocery-cadence demo shop with `--shop demo-grocery`).

For each cut (scoring/evaluation/shops.py CUTS: `main`, then `second`) Aisle runs its whole nightly job
(dbt with the cut as as_of, Feast, fine-tuning, retrieval, the learned ranker) on the data before the cut,
in that shop's and cut's evaluation profile, unless `--run-dir` names a run folder to evaluate for the main
cut; then every method is scored on the protocol's users and items (scoring/evaluation/protocol.py): the
simple peers, the content peers, the tuned peers (EASE, time-decayed repurchase, TIFU-KNN; knobs chosen on
a validation window inside the training period), Aisle's ablations (scoring/evaluation/ablation.py) and
Aisle. The catalogue at each cut also lists the items first sold in its test window, with their titles
and no sales (settings.catalogue_as_of), so that every method is told the same items exist and a new item
can be reached from its text. The report adds the new-items table and its target, the ablation table, the
ranker's AUC on its own holdout, the NDCG-against-diversity trade-off of the top list
(scoring/ranking/select.py) and the NDCG of the discover list beside the top list. Writes
reports/evaluation.json and reports/evaluation.html (evaluation-<shop>.* for a shop other than Online
Retail).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from scoring.evaluation import ablation, peers, run_scores, shops, tuning
from scoring.evaluation.plots import write_html
from scoring.evaluation.protocol import (
    TARGET_RATIO,
    VIEWS,
    K,
    Split,
    item_categories,
    list_scores,
    score_table,
    split,
    user_lists,
)
from scoring.ranking import select
from scoring.settings import ROOT, Settings

console = Console()
REPORTS = ROOT / "reports"
CUT_NAMES = ("main", "second")  # the names of shops.CUTS[shop][0] and [1]
# Aisle and its ablations, never a peer.
AISLE_OWN = (
    "two_tower_zero_shot",
    "two_tower_finetuned",
    "aisle_without_embeddings",
    "aisle_zero_shot_embeddings",
    "aisle_fine_tuned_embeddings",
    "aisle",
)
# The peers that read titles, the only ones that can reach an item nobody has bought yet.
CONTENT_PEERS = ("tfidf_title_history", "zero_shot_minilm_mean_history")
NEW_ITEMS_METHODS = (*CONTENT_PEERS, "two_tower_zero_shot", "two_tower_finetuned", "aisle")
# The top list's diversity settings the trade-off is measured at (Settings fields of select.top_lists).
DIVERSITY_POINTS: dict[str, dict] = {
    "none": {"diversity": "none"},
    "mmr, lambda 0.3": {"diversity": "mmr", "diversity_lambda": 0.3},
    "mmr, lambda 0.7": {"diversity": "mmr", "diversity_lambda": 0.7},
    "category cap 2": {"diversity": "category_cap", "category_cap": 2},
}


def evaluate(run_dir: Path, settings: Settings, split_: Split, test_end: str | None) -> dict:
    """One cut's report: every method's metrics on the split, the tuned peers' knobs, whether Aisle meets
    its target, the ranker's holdout AUC, the diversity trade-off and the two lists, and what the run
    folder says about Aisle."""
    console.print(
        f"evaluating {len(split_.users):,} users on {len(split_.items):,} items "
        f"(cut {split_.cut.date()}, test to {test_end or 'the end'})"
    )
    ranked = pd.read_parquet(run_dir / "ranked.parquet")
    categories = item_categories(split_, ranked)  # every ranked item's, whoever it was ranked for
    ranked = ranked[ranked["user_id"].isin(set(split_.users))]

    def table(scores: np.ndarray) -> dict:
        return score_table(scores, split_, K, categories)

    base_model = settings.resolved_model_name
    simple = {
        "popularity": lambda: peers.popularity(split_),
        "repurchase_then_popularity": lambda: peers.repurchase_then_popularity(split_),
        "item_knn": lambda: peers.item_knn(split_),
        "implicit_als": lambda: peers.implicit_als(split_),
        "tfidf_title_history": lambda: peers.tfidf_title_history(split_),
        "zero_shot_minilm_mean_history": lambda: peers.zero_shot_mean_history(split_, base_model),
    }
    results = {name: table(fn()) for name, fn in simple.items()}
    tuned = tuning.tuned_peers(split_, K, settings.evaluation_validation_days)
    results |= {name: table(scores) for name, (scores, _) in tuned.items()}
    variants = ablation.variant_runs(run_dir, settings)
    own = {
        "two_tower_zero_shot": run_scores.two_tower_scores(variants["zero_shot_embeddings"], split_),
        "two_tower_finetuned": run_scores.two_tower_scores(run_dir, split_),
        "aisle_without_embeddings": run_scores.aisle_scores(variants["without_embeddings"], split_),
        "aisle_zero_shot_embeddings": run_scores.aisle_scores(variants["zero_shot_embeddings"], split_),
        "aisle_fine_tuned_embeddings": run_scores.aisle_scores(variants["fine_tuned_embeddings"], split_),
        "aisle": run_scores.aisle_scores(run_dir, split_),
    }
    results |= {name: table(scores) for name, scores in own.items()}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "protocol": {
            "cut": str(split_.cut.date()),
            "test_end": test_end,
            "users": int(len(split_.users)),
            "items": int(len(split_.items)),
            "k": K,
            "validation_days": settings.evaluation_validation_days,
        },
        "methods": results,
        "tuned_params": {name: params for name, (_, params) in tuned.items()},
        "target": target(results, K),
        "new_items": new_items(results, split_, K),
        "ablation": {
            "encoder_shipped": manifest["stages"]["finetune"].get("encoder", {}).get("shipped"),
            "embedding_gate": manifest["stages"]["rank"].get("embedding_gate"),
            **ablation.report(
                {name: own[f"aisle_{name}"] for name in ablation.VARIANTS} | {ablation.SHIPPED: own["aisle"]},
                split_,
                K,
                {name: _holdout(folder) for name, folder in variants.items()}
                | {ablation.SHIPPED: manifest["stages"]["rank"]["holdout"]},
            ),
        },
        "ranker_auc": manifest["stages"]["rank"]["holdout"]["auc"],
        "diversity_tradeoff": diversity_tradeoff(ranked, split_, settings, categories),
        "lists": list_report(ranked, split_, settings, categories),
        "candidate_recall": run_scores.candidate_recall(run_dir, split_),
        "ranker_importances": manifest["stages"]["rank"]["importances"],
        "finetune": {k: v for k, v in manifest["stages"]["finetune"].items() if k != "loss_curve"},
        "run_dir": str(run_dir),
    }


def target(methods: dict, k: int) -> dict:
    """Aisle's NDCG@k against the best peer's (every method but Aisle and its ablations), over all items
    and over novel items: the ratio and whether it reaches TARGET_RATIO."""
    peers_ = [m for m in methods if m not in AISLE_OWN]
    return {
        column: against_best(methods, metric, peers_)
        for column, metric in (("all", f"ndcg@{k}"), ("novel", f"ndcg@{k}_novel"))
    }


def against_best(methods: dict, metric: str, peers_: list[str] | tuple[str, ...]) -> dict:
    """Aisle's `metric` against the best of `peers_`: the ratio and whether it reaches TARGET_RATIO."""
    best = max(peers_, key=lambda m: methods[m][metric]["value"])
    aisle, peer = methods["aisle"][metric]["value"], methods[best][metric]["value"]
    ratio = aisle / peer if peer > 0 else float("inf")
    return {
        "best_peer": best,
        "peer": peer,
        "aisle": aisle,
        "ratio": round(ratio, 3),
        "met": bool(ratio >= TARGET_RATIO),
    }


def new_items(methods: dict, split_: Split, k: int) -> dict:
    """The new-items table: how many items were first sold in the test window and what share of the
    evaluated users' test items they are; NDCG@k and Recall@k over purchases of new items (only new items
    in the truth and the list) and over all items, for the content peers and Aisle's text-reading
    methods; Aisle's NDCG@k on new items against the best content peer's (the target)."""
    bought = sum(len(truth) for truth in split_.truth)
    new_bought = sum(len(truth & split_.new) for truth in split_.truth)
    metrics = (f"ndcg@{k}_new", f"recall@{k}_new", f"ndcg@{k}", f"recall@{k}")
    out: dict = {
        "items": len(split_.new),
        "users": methods["aisle"]["users_new"],
        "share_of_test_items": round(new_bought / bought, 4) if bought else 0.0,
        "methods": {m: {metric: methods[m][metric] for metric in metrics} for m in NEW_ITEMS_METHODS},
    }
    if new_bought:
        out["target"] = against_best(methods, f"ndcg@{k}_new", CONTENT_PEERS)
    return out


def _holdout(folder: Path) -> dict:
    """A variant's rank-stage holdout record (AUC and NDCG on the ranker's held-out users)."""
    return json.loads((folder / "manifest.json").read_text())["stages"]["rank"]["holdout"]


def diversity_tradeoff(
    ranked: pd.DataFrame, split_: Split, settings: Settings, categories: dict, k: int = K
) -> list[dict]:
    """NDCG@k and intra-list diversity of Aisle's top list at each of DIVERSITY_POINTS, picked from the
    run's ranked candidates by the same function the `select` stage uses."""
    out = []
    for name, update in DIVERSITY_POINTS.items():
        chosen = select.top_lists(ranked, k, settings.model_copy(update=update))
        row = score_table(list_scores(chosen, split_), split_, k, categories)
        metrics = (f"ndcg@{k}", f"ndcg@{k}_novel", f"diversity@{k}")
        out.append({"setting": name, **update, **{m: row[m] for m in metrics}})
    return out


def list_report(
    ranked: pd.DataFrame, split_: Split, settings: Settings, categories: dict, k: int = K
) -> dict:
    """The published top list (as the run's settings pick it, repeats allowed) beside the discover list
    (the best never-bought items): NDCG@k over all items and over novel items (the user's past items
    hidden from the list and the truth, as a front end that hides bought items shows it), and how many
    items each list still shows a user once the items they bought before the cut are hidden."""
    out = {}
    for name, chosen in (
        ("top", select.top_lists(ranked, k, settings)),
        ("discover", select.discover_lists(ranked, k)),
    ):
        scores = list_scores(chosen, split_)
        row = score_table(scores, split_, k, categories)
        shown, _ = user_lists(scores, split_, "all", k)
        left = [len(set(items.tolist()) - past) for items, past in zip(shown, split_.past, strict=True)]
        out[name] = {
            f"ndcg@{k}": row[f"ndcg@{k}"],
            f"ndcg@{k}_novel": row[f"ndcg@{k}_novel"],
            f"recall@{k}_novel": row[f"recall@{k}_novel"],
            "new_items_per_list": round(float(np.mean(left)), 2),
        }
    return out


def _cell(metric: dict) -> str:
    return f"{metric['value']:.3f} [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"


def print_table(shop: str, name: str, report: dict) -> None:
    """One cut's table (intervals for recall and NDCG; the page and JSON hold every interval), then the
    target, the ranker's AUC, the tuned knobs, the trade-off and the lists."""
    protocol, k = report["protocol"], report["protocol"]["k"]
    table = Table(
        title=f"{shop}, {name} cut {protocol['cut']} (test to {protocol['test_end'] or 'the end'}): "
        f"{protocol['users']:,} users, {protocol['items']:,} items (95% bootstrap CI)"
    )
    columns = {
        f"NDCG@{k}": f"ndcg@{k}",
        f"NDCG@{k} novel": f"ndcg@{k}_novel",
        f"Recall@{k}": f"recall@{k}",
        f"Recall@{k} novel": f"recall@{k}_novel",
        f"P@{k}": f"precision@{k}",
        f"F1@{k}": f"f1@{k}",
        f"MAP@{k}": f"map@{k}",
        f"HR@{k}": f"hit_rate@{k}",
        "coverage": f"coverage@{k}",
        "ILD": f"diversity@{k}",
        "novelty": f"novelty@{k}",
    }
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    for method, row in report["methods"].items():
        cells = []
        for key in columns.values():
            value = row[key]
            if key in (f"ndcg@{k}", f"ndcg@{k}_novel", f"recall@{k}", f"recall@{k}_novel"):
                cells.append(_cell(value))
            elif isinstance(value, dict):
                cells.append(f"{value['value']:.{1 if key == f'novelty@{k}' else 3}f}")
            else:
                cells.append(f"{value:.3f}")
        table.add_row(method, *cells)
    console.print(table)
    new = report["new_items"]
    targets = report["target"] | ({"new": new["target"]} if "target" in new else {})
    for column, t in targets.items():
        verdict = "met" if t["met"] else "not met"
        console.print(
            f"target NDCG@{k} {column}: aisle {t['aisle']:.3f} / {t['best_peer']} {t['peer']:.3f} = "
            f"{t['ratio']:.3f} (>= {TARGET_RATIO}: {verdict})"
        )
    console.print(
        f"new items: {new['items']:,} first sold in the test window, {new['share_of_test_items']:.1%} of the "
        f"test items, {new['users']:,} users bought one"
    )
    for method, row in new["methods"].items():
        console.print(
            f"  {method}: NDCG@{k} new {_cell(row[f'ndcg@{k}_new'])}, Recall@{k} new "
            f"{_cell(row[f'recall@{k}_new'])}, NDCG@{k} all {_cell(row[f'ndcg@{k}'])}"
        )
    for name_, row in report["ablation"]["rows"].items():
        views = ", ".join(f"{label} {_cell(row[f'ndcg@{k}{suffix}'])}" for label, suffix in VIEWS.items())
        lead = ", ".join(
            f"{label} {_cell(row[f'fine_tuned_lead_ndcg@{k}{suffix}'])}"
            for label, suffix in VIEWS.items()
            if f"fine_tuned_lead_ndcg@{k}{suffix}" in row
        )
        console.print(f"ablation {name_}: NDCG@{k} {views}" + (f"; fine-tuned lead {lead}" if lead else ""))
    console.print(f"ranker AUC on its holdout: {report['ranker_auc']}")
    console.print("tuned peers' knobs (chosen on validation):", report["tuned_params"])
    for point in report["diversity_tradeoff"]:
        console.print(
            f"diversity {point['setting']}: NDCG@{k} {_cell(point[f'ndcg@{k}'])}, "
            f"ILD {_cell(point[f'diversity@{k}'])}"
        )
    for name_, row in report["lists"].items():
        console.print(
            f"{name_} list: NDCG@{k} {_cell(row[f'ndcg@{k}'])}, novel {_cell(row[f'ndcg@{k}_novel'])}, "
            f"{row['new_items_per_list']} never-bought items per list"
        )
    console.print("candidate recall (share of test items among the candidates):", report["candidate_recall"])


def _run_dirs(values: list[str], parser: argparse.ArgumentParser) -> dict[str, Path]:
    """`--run-dir` values by cut: CUT=PATH, or a bare PATH (no '=' before its first '/') for the main cut."""
    out = {}
    for value in values:
        cut, sep, path = value.partition("=")
        if not sep or "/" in cut:
            cut, path = "main", value
        if cut not in CUT_NAMES:
            parser.error(f"--run-dir {value}: the cut must be one of {', '.join(CUT_NAMES)}")
        out[cut] = Path(path)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aisle evaluate", description="Offline evaluation of Aisle against its peers, on each cut."
    )
    parser.add_argument("--shop", choices=sorted(shops.CUTS), default="online_retail")
    parser.add_argument("--cut", choices=[*CUT_NAMES, "both"], default="both")
    parser.add_argument(
        "--run-dir",
        action="append",
        default=[],
        metavar="[CUT=]PATH",
        help="evaluate this run folder instead of running the pipeline: CUT=PATH for a cut "
        f"({', '.join(CUT_NAMES)}), a bare PATH for the main cut; repeat it for each cut",
    )
    parser.add_argument("--out", type=Path, default=REPORTS, help="folder of the report files")
    args = parser.parse_args(argv)
    run_dirs = _run_dirs(args.run_dir, parser)
    names = CUT_NAMES if args.cut == "both" else (args.cut,)
    cuts = {name: shops.CUTS[args.shop][CUT_NAMES.index(name)] for name in names}
    base = Settings()
    profiles = {name: shops.evaluation_settings(args.shop, base, cut) for name, cut in cuts.items()}
    purchases = shops.purchases(args.shop, profiles[names[0]])  # the same raw data for every cut
    report: dict = {"shop": args.shop, "k": K, "cuts": {}}
    for name, (cut, test_end) in cuts.items():
        if name in run_dirs:
            run_dir = run_dirs[name]
        else:
            from scoring.pipeline.job import run

            run_dir = run(profiles[name])
        split_ = split(purchases, cut, test_end)
        report["cuts"][name] = evaluate(run_dir, profiles[name], split_, test_end)
    stem = "evaluation" if args.shop == "online_retail" else f"evaluation-{args.shop}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    for name, cut_report in report["cuts"].items():
        print_table(args.shop, name, cut_report)
    page = write_html(report, args.out / f"{stem}.html")
    console.print(f"wrote {args.out / f'{stem}.json'} and {page}")


if __name__ == "__main__":
    main()
