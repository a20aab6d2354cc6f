"""`make evaluate`: DESIGN §6 on the real UCI Online Retail data, Aisle against the usual peers.

The protocol is computed here from the raw file, independently of Aisle's own cleaning: purchases are
lines with Quantity > 0, UnitPrice > 0, a CustomerID, a non-'C' invoice and a product stock code;
train before 2011-09-01, test from it on; users with a purchase on each side; the truth is the set of
distinct items a user bought in the test window. Aisle runs its whole pipeline (dbt with the same cut,
Feast, fine-tuning, retrieval, the learned ranker) on the data before the cut, and every method is
scored on the same users and items: Recall@20 and NDCG@20 (binary gain) over all items, and over novel
items (the user's past items removed from the truth and from the list), with bootstrap 95% intervals.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from retrieval import candidates as cand
from scoring.settings import ROOT, SHARED_ONLINE_RETAIL, Settings

CUT = "2011-09-01"
K = 20
PRODUCT_CODE = "^[0-9]{5}[A-Za-z]*$"
console = Console()


@dataclass
class Split:
    """The protocol's split: who is evaluated, on which items, against which truth."""

    train: pd.DataFrame  # user_id, item_id, ordered_at, title (all train users)
    users: np.ndarray  # evaluated users, sorted
    items: np.ndarray  # the item universe: every product bought in either window, sorted
    truth: list[set[int]]  # per evaluated user, positions of items bought in the test window
    past: list[set[int]]  # per evaluated user, positions of items bought in the train window

    def position(self, item_ids: pd.Series) -> np.ndarray:
        return pd.Index(self.items).get_indexer(item_ids)


def protocol_purchases(path: Path) -> pd.DataFrame:
    """The protocol's purchase lines, read in place from the raw file."""
    return duckdb.sql(
        f"""
        select
            cast(cast(cast(CustomerID as double) as bigint) as varchar) as user_id,
            upper(trim(StockCode)) as item_id,
            cast(InvoiceDate as timestamp) as ordered_at,
            trim(Description) as title
        from read_csv('{path}', header = true, all_varchar = true)
        where cast(Quantity as integer) > 0
          and cast(UnitPrice as double) > 0
          and CustomerID is not null
          and not starts_with(InvoiceNo, 'C')
          and regexp_matches(trim(StockCode), '{PRODUCT_CODE}')
        """
    ).df()


def split(purchases: pd.DataFrame, cut: str = CUT) -> Split:
    cut_ts = pd.Timestamp(cut)
    train = purchases[purchases["ordered_at"] < cut_ts]
    test = purchases[purchases["ordered_at"] >= cut_ts]
    users = np.array(sorted(set(train["user_id"]) & set(test["user_id"])))
    items = np.array(sorted(set(purchases["item_id"])))
    index = pd.Index(items)

    def sets(frame: pd.DataFrame) -> list[set[int]]:
        frame = frame[frame["user_id"].isin(set(users))]
        positions = index.get_indexer(frame["item_id"])
        grouped = pd.Series(positions).groupby(frame["user_id"].to_numpy()).agg(lambda p: set(p[p >= 0]))
        return [grouped.get(u, set()) for u in users]

    return Split(train=train, users=users, items=items, truth=sets(test), past=sets(train))


def user_item_matrix(split: Split, users: np.ndarray, binary: bool = True) -> sp.csr_matrix:
    """The train window's users x items matrix, over the split's item universe."""
    return cand.user_item_matrix(split.train, users, split.items, binary=binary)


# ----- metrics ---------------------------------------------------------------------------------


def per_user_metrics(scores: np.ndarray, split: Split, novel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Recall@K and NDCG@K per evaluated user from a (users x items) score matrix (-inf = unscored)."""
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    recalls, ndcgs = [], []
    for row, truth, past in zip(scores, split.truth, split.past, strict=True):
        if novel:
            truth = truth - past
            if not truth:
                continue
            row = row.copy()
            row[list(past)] = -np.inf
        top = np.argpartition(-row, K)[:K]
        top = top[np.argsort(-row[top])]
        top = top[np.isfinite(row[top])]
        hits = np.array([p in truth for p in top], dtype=float)
        recalls.append(hits.sum() / len(truth))
        ideal = discounts[: min(len(truth), K)].sum()
        ndcgs.append((hits * discounts[: len(hits)]).sum() / ideal)
    return np.array(recalls), np.array(ndcgs)


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 1000) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return {
        "value": round(float(values.mean()), 4),
        "ci_low": round(float(np.quantile(means, 0.025)), 4),
        "ci_high": round(float(np.quantile(means, 0.975)), 4),
    }


def score_table(scores: np.ndarray, split: Split) -> dict[str, dict[str, float]]:
    recall, ndcg = per_user_metrics(scores, split, novel=False)
    recall_n, ndcg_n = per_user_metrics(scores, split, novel=True)
    return {
        "recall@20": bootstrap(recall),
        "ndcg@20": bootstrap(ndcg),
        "recall@20_novel": bootstrap(recall_n),
        "ndcg@20_novel": bootstrap(ndcg_n),
        "users": int(len(recall)),
        "users_novel": int(len(recall_n)),
    }


# ----- peers -----------------------------------------------------------------------------------


def popularity(split: Split) -> np.ndarray:
    buyers = split.train.groupby("item_id")["user_id"].nunique()
    counts = buyers.reindex(split.items).fillna(0).to_numpy(dtype=float)
    return np.tile(counts, (len(split.users), 1))


def repurchase_then_popularity(split: Split) -> np.ndarray:
    pop = popularity(split)
    counts = user_item_matrix(split, split.users, binary=False).toarray()
    return np.where(counts > 0, 1e6 * counts, 0.0) + pop / (pop.max() + 1)


def item_knn(split: Split) -> np.ndarray:
    everyone = np.array(sorted(split.train["user_id"].unique()))
    similarity = cand.item_similarity(user_item_matrix(split, everyone))
    return np.asarray((user_item_matrix(split, split.users) @ similarity).todense())


def implicit_als(split: Split, factors: int = 128, seed: int = 0) -> np.ndarray:
    everyone = np.array(sorted(split.train["user_id"].unique()))
    user_factors, item_factors = cand.als_factors(
        user_item_matrix(split, everyone, binary=False), factors, seed
    )
    rows = pd.Index(everyone).get_indexer(split.users)
    return user_factors[rows] @ item_factors.T


def item_titles(split: Split) -> list[str]:
    titles = split.train.groupby("item_id")["title"].agg(lambda t: t.value_counts().index[0])
    return titles.reindex(split.items).fillna("").tolist()


def zero_shot_mean_history(split: Split, model_name: str) -> np.ndarray:
    from scoring.embed import encode
    from scoring.finetune import load_model

    model = load_model(model_name, "cpu", 64)
    vectors = encode(model, item_titles(split), 256, "item titles (zero-shot)")
    mine = user_item_matrix(split, split.users)
    users = np.asarray(mine @ vectors) / np.maximum(np.asarray(mine.sum(axis=1)), 1)
    return users @ vectors.T


# ----- Aisle -----------------------------------------------------------------------------------


def aisle_scores(run_dir: Path, split: Split) -> np.ndarray:
    """The learned ranker's scores for every candidate; items that were no candidate stay unscored."""
    ranked = pd.read_parquet(run_dir / "ranked.parquet")
    return _dense(ranked, "score", split)


def two_tower_scores(run_dir: Path, split: Split) -> np.ndarray:
    """Embedding-only ranking of the run's (fine-tuned) model: user history text vs item text."""
    users = pd.read_parquet(run_dir / "users.parquet")
    user_vectors = np.load(run_dir / "users_embeddings.npy")
    items = pd.read_parquet(run_dir / "items.parquet")
    item_vectors = np.load(run_dir / "item_embeddings.npy")
    return _similarity(users, user_vectors, items, item_vectors, split)


def two_tower_zero_shot(run_dir: Path, split: Split, model_name: str) -> np.ndarray:
    """The same history-text query and item text, with the base model before fine-tuning."""
    from scoring.embed import encode
    from scoring.finetune import load_model

    model = load_model(model_name, "cpu", 96)
    users = pd.read_parquet(run_dir / "users.parquet")
    items = pd.read_parquet(run_dir / "items.parquet")
    user_vectors = encode(model, users["query"].tolist(), 128, "user histories (zero-shot)")
    item_vectors = encode(model, items["text"].tolist(), 128, "items (zero-shot)")
    return _similarity(users, user_vectors, items, item_vectors, split)


def _similarity(users, user_vectors, items, item_vectors, split: Split) -> np.ndarray:
    scores = np.full((len(split.users), len(split.items)), -np.inf, dtype=np.float32)
    urows = pd.Index(users["user_id"]).get_indexer(split.users)
    icols = split.position(items["item_id"])
    known_items = icols >= 0
    sims = user_vectors[np.maximum(urows, 0)] @ item_vectors[known_items].T
    sims[urows < 0] = -np.inf
    scores[:, icols[known_items]] = sims
    return scores


def _dense(frame: pd.DataFrame, column: str, split: Split) -> np.ndarray:
    scores = np.full((len(split.users), len(split.items)), -np.inf, dtype=np.float32)
    rows = pd.Index(split.users).get_indexer(frame["user_id"])
    cols = split.position(frame["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    scores[rows[keep], cols[keep]] = frame[column].to_numpy()[keep]
    return scores


def candidate_recall(run_dir: Path, split: Split) -> dict[str, float]:
    """Share of each evaluated user's test items found by each candidate source, and by all merged."""
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    candidates = candidates[candidates["user_id"].isin(set(split.users))]
    out = {}
    for source in (*cand.SOURCES, "merged"):
        chosen = candidates if source == "merged" else candidates[candidates[source] > 0]
        positions = split.position(chosen["item_id"])
        found = pd.Series(positions).groupby(chosen["user_id"].to_numpy()).agg(lambda p: set(p[p >= 0]))
        recalls = [
            len(t & found.get(u, set())) / len(t) for u, t in zip(split.users, split.truth, strict=True) if t
        ]
        out[source] = round(float(np.mean(recalls)), 4)
    out["merged_candidates_per_user"] = round(len(candidates) / max(1, candidates["user_id"].nunique()), 1)
    return out


# ----- the run ---------------------------------------------------------------------------------


def evaluation_settings(base: Settings) -> Settings:
    """The workspace `make evaluate` runs the pipeline in: Online Retail before the cut."""
    return base.model_copy(
        update={
            "source": "online_retail",
            "raw_path": base.raw_path or SHARED_ONLINE_RETAIL,
            "as_of": CUT,
            "data_dir": base.data_dir / "evaluation",
        }
    )


def evaluate(run_dir: Path, settings: Settings, raw_path: Path) -> dict:
    split_ = split(protocol_purchases(raw_path))
    console.print(f"evaluating {len(split_.users):,} users on {len(split_.items):,} items (cut {CUT})")
    base_model = settings.resolved_model_name
    methods = {
        "popularity": lambda: popularity(split_),
        "repurchase_then_popularity": lambda: repurchase_then_popularity(split_),
        "item_knn": lambda: item_knn(split_),
        "implicit_als": lambda: implicit_als(split_),
        "zero_shot_minilm_mean_history": lambda: zero_shot_mean_history(split_, base_model),
        "two_tower_zero_shot": lambda: two_tower_zero_shot(run_dir, split_, base_model),
        "two_tower_finetuned": lambda: two_tower_scores(run_dir, split_),
        "aisle": lambda: aisle_scores(run_dir, split_),
    }
    results = {name: score_table(fn(), split_) for name, fn in methods.items()}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "protocol": {"cut": CUT, "users": int(len(split_.users)), "items": int(len(split_.items)), "k": K},
        "methods": results,
        "candidate_recall": candidate_recall(run_dir, split_),
        "ranker_importances": manifest["stages"]["rank"]["importances"],
        "finetune": {k: v for k, v in manifest["stages"]["finetune"].items() if k != "loss_curve"},
        "run_dir": str(run_dir),
    }


def print_table(report: dict) -> None:
    table = Table(title=f"Online Retail, cut {CUT}: {report['protocol']['users']:,} users (95% bootstrap CI)")
    for column in ("method", "Recall@20", "NDCG@20", "Recall@20 novel", "NDCG@20 novel"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, metrics in report["methods"].items():
        cells = [
            f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
            for m in (metrics[key] for key in ("recall@20", "ndcg@20", "recall@20_novel", "ndcg@20_novel"))
        ]
        table.add_row(name, *cells)
    console.print(table)
    console.print("candidate recall (share of test items among the candidates):", report["candidate_recall"])


def write_html(report: dict, out: Path) -> Path:
    """reports/evaluation.html: metrics with their intervals, candidate recall and ranker importances."""
    import plotly.graph_objects as go

    from scoring.report import render_page

    methods = list(report["methods"])
    figures = []
    for metric, title in (("ndcg@20", "NDCG@20"), ("recall@20", "Recall@20")):
        fig = go.Figure()
        for suffix, label in (("", "all items"), ("_novel", "novel items")):
            values = [report["methods"][m][metric + suffix] for m in methods]
            fig.add_bar(
                name=label,
                x=methods,
                y=[v["value"] for v in values],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [v["ci_high"] - v["value"] for v in values],
                    "arrayminus": [v["value"] - v["ci_low"] for v in values],
                },
            )
        fig.update_layout(title=f"{title} with 95% bootstrap intervals", barmode="group")
        figures.append(fig)
    recall = {k: v for k, v in report["candidate_recall"].items() if k != "merged_candidates_per_user"}
    figures.append(
        go.Figure(go.Bar(x=list(recall), y=list(recall.values()))).update_layout(
            title="Candidate recall of the test items, by source"
        )
    )
    importances = dict(list(report["ranker_importances"].items())[:15])
    figures.append(
        go.Figure(go.Bar(x=list(importances.values()), y=list(importances), orientation="h")).update_layout(
            title="Ranker feature importance (share of gain)", yaxis={"autorange": "reversed"}
        )
    )
    protocol = report["protocol"]
    intro = (
        f"<p>UCI Online Retail (Chen, Sain and Guo, 2012; CC BY 4.0). Train before {protocol['cut']}, test "
        f"after; {protocol['users']:,} users with a purchase on each side, {protocol['items']:,} items.</p>"
    )
    out.write_text(render_page("Aisle offline evaluation", intro, figures), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir", type=Path, help="evaluate this run folder instead of running the pipeline"
    )
    args = parser.parse_args()
    settings = evaluation_settings(Settings())
    raw_path = settings.resolved_raw_path
    if not raw_path.exists():
        raise SystemExit(
            f"{raw_path} is missing: make evaluate needs the UCI Online Retail file in ../shared."
        )
    if args.run_dir is None:
        from scoring.pipeline import run

        run_dir = run(settings)
    else:
        run_dir = args.run_dir
    report = evaluate(run_dir, settings, raw_path)
    out = ROOT / "reports"
    out.mkdir(exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    console.print(f"wrote {out / 'evaluation.json'} and {write_html(report, out / 'evaluation.html')}")


if __name__ == "__main__":
    main()
