"""`aisle evaluate-search`: search quality on the real Home Depot judgments, Aisle against its peers.

Protocol (docs: the module docstring of scoring/ingest/home_depot.py for the file and the split):
- 80/20 split by search term (a hash of the normalised term). The 80% are the shop's search log: they
  reach the evaluation through a loader. By default that is the governed route: the adapter writes raw
  items and searches files, `dbt build --select +tag:search` builds them into a scratch warehouse under
  data/evaluation/home_depot, and the log is fct_searches (normalised queries) and the catalogue the
  warehouse's staged items (titles as governance repaired them); `--route adapter` skips dbt.
  The training terms are split again by a salted hash: most fine-tune the query encoder, the rest
  (`search_evaluation_ranker_share`) train the ranker on dense scores the encoder has not memorised.
- The 20% test terms are evaluated over the whole catalogue (54,667 products), as typed.
- Metrics per term, averaged over terms: NDCG@10 with gain = grade - 1 and unjudged = 0 (terms whose
  every grade is 1 have no NDCG and are left out); Recall@100 of the products graded >= 2.33; MRR@10 with
  the same relevance threshold (>= 2.33; terms without such a product are left out of both). 95%
  percentile-bootstrap intervals over terms (seeded), and a paired bootstrap of Aisle's NDCG@10 over the
  best peer's.
- Misspelled terms: a term with a word that is not in the catalogue's vocabulary, has no digit, has at
  least `search_typo_min_length` letters, and that symspell corrects to a catalogue word (exactly what
  Aisle's typo tolerance acts on; the catalogue fixes the definition, so it is reproducible).
- Peers in the same run: bm25s BM25 without typo correction, zero-shot all-MiniLM-L6-v2 (the settings'
  model) over FAISS, and their reciprocal-rank fusion. Aisle: typo-tolerant BM25 + the fine-tuned encoder
  over FAISS, fused, then the learned LightGBM ranker (scoring/ranking/search_rank.py). Ablations between
  them are reported too, so each part's share of the gain is visible.

What the Home Depot ranker may use: retrieval scores and ranks and the query/title word overlap. It is
not given item statistics from the training log: the catalogue is exactly the set of judged products,
most judged once, so "this product was clicked for another term" mostly means "this product is not
judged for a test term", an artefact of how the file was built, not a property of search.

Writes reports/search_evaluation.json and reports/search_evaluation.html.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from retrieval import index as faiss_index
from retrieval.hybrid import HybridRetriever
from retrieval.lexical import LexicalIndex
from scoring.evaluation import metrics
from scoring.evaluation.protocol import bootstrap
from scoring.ingest import home_depot
from scoring.ranking.search_rank import SearchRanker, search_features
from scoring.settings import ROOT, Settings

console = Console()
REPORTS = ROOT / "reports"
NDCG_K, RECALL_K, MRR_K = 10, 100, 10
METRICS = (f"ndcg@{NDCG_K}", f"recall@{RECALL_K}", f"mrr@{MRR_K}")
PEERS = ("bm25", "zero_shot_minilm", "rrf_bm25_zero_shot")
# Gains the ranker learns from, per action of the log: the lowest grade - 1 each action stands for
# (scoring/ingest/home_depot.py maps grades onto actions), so its objective matches the metric's gain.
ACTION_GAIN = {"purchase": 2.0, "cart": 1.67, "click": 1.33}


def evaluation_settings(base: Settings) -> Settings:
    """The profile of `make evaluate-search`: its own workspace under data/evaluation/home_depot, and the
    search evaluation's fine-tuning budget and learning rate."""
    return base.model_copy(
        update={
            "data_dir": base.data_dir / "evaluation" / "home_depot",
            "finetune_steps": base.search_evaluation_finetune_steps,
            "learning_rate": base.search_evaluation_learning_rate,
        }
    )


# ----- the training log: a loader, so that the log can come from the adapter or from the warehouse -------
@dataclass
class TrainingLog:
    """The catalogue and the training terms' search log, on the contract."""

    items: pd.DataFrame  # item_id, title
    searches: pd.DataFrame  # search_id, user_id, query, searched_at, item_id, action, position
    route: str


def log_from_adapter(data: home_depot.HomeDepot, settings: Settings) -> TrainingLog:
    """The adapter's frames as they are."""
    return TrainingLog(data.items, data.searches, "adapter frames")


def log_from_warehouse(data: home_depot.HomeDepot, settings: Settings) -> TrainingLog:
    """The governed route: the adapter writes raw files, dbt builds the search models (`+tag:search`) into
    a scratch warehouse beside them, and the log is read back from fct_searches, the catalogue from the
    warehouse's items."""
    from scoring.warehouse import dbt, tables

    root = settings.data_dir
    raw = home_depot.write_raw(data, root / "raw")
    workspace = settings.model_copy(
        update={"source": "files", "raw_path": raw, "raw_format": "parquet", "as_of": None}
    ).for_build(root / "warehouse")
    workspace.state_dir.mkdir(parents=True, exist_ok=True)
    dbt.run(workspace, "build", "--select", "+tag:search")
    searches = pd.read_parquet(tables.mart_path(workspace, "fct_searches"))
    items = tables.read(workspace, "select item_id, title from staging.stg_items")
    return TrainingLog(items, searches, f"dbt warehouse ({workspace.warehouse_path})")


LOADERS: dict[str, Callable[[home_depot.HomeDepot, Settings], TrainingLog]] = {
    "adapter": log_from_adapter,
    "dbt": log_from_warehouse,
}


# ----- embeddings, cached by content ------------------------------------------------------------------------
def _cache_key(model_name: str, max_seq_length: int, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{Path(model_name).name}|{max_seq_length}|".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def cached_encode(
    model, model_name: str, texts: list[str], settings: Settings, cache: Path | None, label: str
):
    """Normalised embeddings of `texts`, read from `cache` when this model already embedded these texts."""
    from scoring.training.text_vectors import encode

    path = None
    if cache is not None:
        path = cache / f"{label}-{_cache_key(model_name, settings.max_seq_length, texts)}.npy"
        if path.exists():
            console.print(f"  {label}: {len(texts):,} embeddings from the cache ({path.name})")
            return np.load(path)
    vectors = encode(model(), texts, settings.embed_batch_size, label)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


# ----- metrics ---------------------------------------------------------------------------------------------
@dataclass
class Judged:
    """The test terms with their judgments: gains (grade - 1) and relevant sets (grade >= 2.33)."""

    terms: list[str]
    gains: list[dict[str, float]]
    relevant: list[set[str]]
    misspelled: np.ndarray  # bool per term

    @classmethod
    def from_judgments(cls, judgments: pd.DataFrame, lexical: LexicalIndex) -> Judged:
        ordered = judgments.sort_values("row_id")
        terms = list(dict.fromkeys(ordered["search_term"]))
        grouped = {t: g for t, g in ordered.groupby("search_term", sort=False)}
        gains = [dict(zip(grouped[t]["item_id"], grouped[t]["grade"] - 1.0, strict=True)) for t in terms]
        relevant = [
            set(grouped[t].loc[grouped[t]["grade"] >= home_depot.RELEVANT_GRADE - 1e-9, "item_id"])
            for t in terms
        ]
        misspelled = np.array([bool(lexical.correct(t).changed) for t in terms])
        return cls(terms, gains, relevant, misspelled)


def per_term(judged: Judged, ranked: list[Sequence[str]]) -> pd.DataFrame:
    """Each metric per test term (nan where a term has no positive gain / no relevant product)."""
    rows = []
    for gains, relevant, top in zip(judged.gains, judged.relevant, ranked, strict=True):
        top = list(top)
        rows.append(
            {
                METRICS[0]: metrics.graded_ndcg_at_k(gains, top, NDCG_K),
                METRICS[1]: metrics.recall_at_k(relevant, top, RECALL_K),
                METRICS[2]: metrics.reciprocal_rank_at_k(relevant, top, MRR_K) if relevant else np.nan,
            }
        )
    return pd.DataFrame(rows)


def summarise(values: pd.DataFrame, misspelled: np.ndarray, seed: int, resamples: int) -> dict:
    """Each metric's mean and interval, overall and for misspelled terms against the rest."""

    def block(frame: pd.DataFrame) -> dict:
        out = {}
        for metric in METRICS:
            column = frame[metric].dropna().to_numpy()
            out[metric] = bootstrap(column, seed=seed, n=resamples) if len(column) else None
        out["terms"] = int(frame[METRICS[0]].notna().sum())
        return out

    return {
        **block(values),
        "misspelled": block(values[misspelled]),
        "other": block(values[~misspelled]),
    }


def paired_ratio(a: np.ndarray, b: np.ndarray, seed: int, resamples: int) -> dict:
    """mean(a) / mean(b) over the same terms, with a paired percentile-bootstrap 95% interval."""
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    ratios = a[picks].mean(axis=1) / b[picks].mean(axis=1)
    return {
        "value": round(float(a.mean() / b.mean()), 4),
        "ci_low": round(float(np.quantile(ratios, 0.025)), 4),
        "ci_high": round(float(np.quantile(ratios, 0.975)), 4),
    }


# ----- the run ---------------------------------------------------------------------------------------------
def _subsample(
    data: home_depot.HomeDepot, max_terms: int | None, max_items: int | None, seed: int
) -> home_depot.HomeDepot:
    """A smaller, deterministic slice for quick runs (tests): some terms of each side, and a catalogue of
    their judged products plus a random sample of the others. The full evaluation never subsamples."""
    judgments = data.judgments
    if max_terms is not None:
        keys = judgments["term_key"].drop_duplicates()
        chosen = set(
            keys.sort_values(key=lambda k: k.map(lambda t: home_depot.hash_fraction(t, "sample")))[:max_terms]
        )
        judgments = judgments[judgments["term_key"].isin(chosen)]
    items = data.items
    if max_items is not None:
        judged = set(judgments["item_id"])
        others = items[~items["item_id"].isin(judged)]
        extra = others.sample(n=max(0, min(len(others), max_items - len(judged))), random_state=seed)
        items = items[items["item_id"].isin(judged) | items["item_id"].isin(set(extra["item_id"]))]
    return home_depot.HomeDepot(
        items=items.reset_index(drop=True),
        judgments=judgments.reset_index(drop=True),
        searches=home_depot.search_log(judgments[~judgments["test"]]),
        test_share=data.test_share,
    )


class Clock:
    """Wall time of each phase, printed as it ends."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}
        self._last = self.start

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 1)
        self._last = now
        console.print(f"[dim]{name}: {self.phases[name]:.1f} s[/]")

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def _top(frame: pd.DataFrame, score: str, n: int, queries: int) -> list[list[str]]:
    """The n best item ids per query_index by `score`."""
    ordered = frame.sort_values(
        ["query_index", score, "item_id"], ascending=[True, False, True], kind="stable"
    )
    grouped = ordered.groupby("query_index")["item_id"].agg(lambda s: list(s[:n]))
    return [grouped.get(i, []) for i in range(queries)]


def _with_corrected(frame: pd.DataFrame, terms: list[str], lexical: LexicalIndex) -> pd.DataFrame:
    corrected = [" ".join(lexical.correct(t).corrected) for t in terms]
    return frame.assign(
        query=np.asarray(terms, dtype=object)[frame["query_index"]],
        corrected_query=np.asarray(corrected, dtype=object)[frame["query_index"]],
    )


def evaluate(
    settings: Settings,
    path: Path = home_depot.HOME_DEPOT_ZIP,
    route: str = "adapter",
    cache: Path | None = None,
    max_terms: int | None = None,
    max_items: int | None = None,
) -> dict:
    """The whole evaluation; returns the report (what search_evaluation.json holds)."""
    import torch

    from scoring.evaluation.search_finetune import finetune_query_tower
    from scoring.training.finetune import load_model, pick_device

    torch.set_num_threads(settings.threads)  # the settings' cores, not every core torch sees
    clock = Clock()
    seed, resamples = settings.seed, settings.search_evaluation_bootstrap
    data = home_depot.load(path, settings.search_evaluation_test_share)
    if max_terms is not None or max_items is not None:
        data = _subsample(data, max_terms, max_items, seed)
    log = LOADERS[route](data, settings)
    # One catalogue order whatever the route (a warehouse table has none), so cached embeddings match.
    items = (
        log.items.assign(item_id=log.items["item_id"].astype(str))
        .sort_values("item_id", kind="stable")
        .reset_index(drop=True)
    )
    item_ids = items["item_id"].to_numpy()
    titles = items["title"].fillna("").astype(str).tolist()
    console.print(
        f"Home Depot: {len(items):,} products, {data.split_summary()['test_terms']:,} test terms, "
        f"training log of {log.searches['search_id'].nunique():,} searches via {log.route}"
    )
    clock.lap("load")

    lexical = LexicalIndex.from_settings(settings, item_ids, titles)
    plain = dataclasses.replace(lexical, typo_tolerant=False)
    test = data.test[data.test["item_id"].isin(set(item_ids))]
    judged = Judged.from_judgments(test, lexical)
    clock.lap("lexical index and judgments")

    # The training log: actions -> (query, item) positives with gains; terms split for fine-tuning/ranker.
    acted = log.searches[log.searches["action"].isin(list(ACTION_GAIN))].copy()
    acted["item_id"] = acted["item_id"].astype(str)
    acted = acted[acted["item_id"].isin(set(item_ids))]
    acted["gain"] = acted["action"].map(ACTION_GAIN)
    acted["for_ranker"] = acted["query"].map(
        lambda q: home_depot.part_of(q, settings.search_evaluation_ranker_share)
    )
    row_of = pd.Series(np.arange(len(item_ids)), index=item_ids)
    pairs = acted[~acted["for_ranker"]].assign(item_row=lambda f: row_of.loc[f["item_id"]].to_numpy())
    ranker_log = acted[acted["for_ranker"]]
    ranker_terms = sorted(set(ranker_log["query"]))

    model_name = settings.resolved_model_name
    base = {}

    def base_model():
        if "model" not in base:
            base["model"] = load_model(model_name, pick_device(settings.device), settings.max_seq_length)
        return base["model"]

    item_vectors = cached_encode(base_model, model_name, titles, settings, cache, "items")
    zero_test = cached_encode(base_model, model_name, judged.terms, settings, cache, "queries")
    clock.lap("zero-shot embeddings")
    dense_index, index_info = faiss_index.build(item_vectors, settings.ann_threshold)

    console.print(
        f"fine-tuning the query tower on {len(pairs):,} pairs of {pairs['query'].nunique():,} terms"
    )
    tuned, finetune_metrics = finetune_query_tower(
        pairs, item_vectors, settings, settings.finetune_steps, settings.search_evaluation_finetune_batch_size
    )
    clock.lap("fine-tuning")
    tuned_test = cached_encode(lambda: tuned, "", judged.terms, settings, None, "test queries (fine-tuned)")
    tuned_ranker = cached_encode(
        lambda: tuned, "", ranker_terms, settings, None, "ranker queries (fine-tuned)"
    )
    clock.lap("fine-tuned query embeddings")

    pool, n = settings.search_pool, len(judged.terms)
    ranked: dict[str, list[Sequence[str]]] = {}
    ranked["bm25"] = [plain.search(t, RECALL_K)[0] for t in judged.terms]
    _, rows = faiss_index.search(dense_index, zero_test, RECALL_K)
    ranked["zero_shot_minilm"] = [item_ids[r[r >= 0]] for r in rows]
    peer_fusion = HybridRetriever.from_settings(settings, plain, dense_index, item_ids, items, item_vectors)
    ranked["rrf_bm25_zero_shot"] = _top(
        peer_fusion.retrieve_many(judged.terms, zero_test, RECALL_K), "fused_score", RECALL_K, n
    )
    ranked["bm25_typo_tolerant"] = [lexical.search(t, RECALL_K)[0] for t in judged.terms]
    _, rows = faiss_index.search(dense_index, tuned_test, RECALL_K)
    ranked["finetuned_dense"] = [item_ids[r[r >= 0]] for r in rows]
    hybrid = HybridRetriever.from_settings(settings, lexical, dense_index, item_ids, items, item_vectors)
    test_candidates = _with_corrected(
        hybrid.retrieve_many(judged.terms, tuned_test, pool), judged.terms, lexical
    )
    ranked["hybrid_rrf_finetuned"] = _top(test_candidates, "fused_score", RECALL_K, n)
    clock.lap("retrieval")

    # The ranker: candidates of the ranker terms, labelled from the log's actions.
    train = _with_corrected(hybrid.retrieve_many(ranker_terms, tuned_ranker, pool), ranker_terms, lexical)
    gains = (
        train.merge(
            ranker_log[["query", "item_id", "gain"]].drop_duplicates(["query", "item_id"]),
            on=["query", "item_id"],
            how="left",
        )["gain"]
        .fillna(0.0)
        .to_numpy()
    )
    catalogue = items.rename(columns={"title": "text"})[["item_id", "text"]]
    ranker = SearchRanker.from_settings(settings).fit(search_features(train, items=catalogue), gains)
    test_features = search_features(test_candidates, items=catalogue)
    test_features["ranker_score"] = ranker.predict(test_features)
    ranked["aisle"] = _top(test_features, "ranker_score", RECALL_K, n)
    clock.lap("ranker")

    per_method = {name: per_term(judged, lists) for name, lists in ranked.items()}
    results = {
        name: summarise(values, judged.misspelled, seed, resamples) for name, values in per_method.items()
    }
    ndcg = METRICS[0]
    best_peer = max(PEERS, key=lambda p: results[p][ndcg]["value"])
    ratio = paired_ratio(
        per_method["aisle"][ndcg].to_numpy(), per_method[best_peer][ndcg].to_numpy(), seed, resamples
    )
    zero_vs_tuned = {
        "zero_shot": results["zero_shot_minilm"][ndcg],
        "fine_tuned": results["finetuned_dense"][ndcg],
        "metric": ndcg,
        "what": "dense retrieval alone over FAISS, same item vectors; only the query encoder differs",
    }
    clock.lap("metrics")
    report = {
        "dataset": {
            "name": "Home Depot Product Search Relevance (Kaggle, 2016), train.csv",
            "path": str(path),
            "subsample": {"max_terms": max_terms, "max_items": max_items} if max_terms or max_items else None,
        },
        "split": {
            **data.split_summary(),
            "evaluated_items": int(len(items)),
            "evaluated_terms": n,
            "misspelled_terms": int(judged.misspelled.sum()),
            "ranker_terms": len(ranker_terms),
            "finetune_terms": int(pairs["query"].nunique()),
            "ranker_share_of_training_terms": settings.search_evaluation_ranker_share,
            "training_log_route": log.route,
        },
        "protocol": {
            "ndcg": f"NDCG@{NDCG_K}, gain = grade - 1, unjudged = 0; terms with no grade above 1 left out",
            "recall": f"Recall@{RECALL_K} of products graded >= {home_depot.RELEVANT_GRADE}",
            "mrr": f"MRR@{MRR_K}, relevant = graded >= {home_depot.RELEVANT_GRADE}; terms without one "
            "left out",
            "intervals": f"95% percentile bootstrap over terms, {resamples} resamples, seed {seed}",
            "misspelled": "a word not in the catalogue vocabulary, without digits, of at least "
            f"{settings.search_typo_min_length} letters, that symspell corrects to a catalogue word",
            "grade_to_action": {"purchase": "= 3", "cart": ">= 2.67", "click": ">= 2.33", "none": "below"},
        },
        "peers": list(PEERS),
        "methods": results,
        "target": {
            "aisle_over_best_peer_ndcg": ratio,
            "best_peer": best_peer,
            "goal": 1.10,
            "met": bool(ratio["value"] >= 1.10),
        },
        "zero_shot_vs_finetuned": zero_vs_tuned,
        "finetune": {k: v for k, v in finetune_metrics.items() if k != "loss_curve"},
        "finetune_loss_curve": finetune_metrics["loss_curve"],
        "ranker": {"importances": ranker.importances(), **ranker.stats, "features": ranker.features},
        "fusion": {
            "rrf_k": settings.search_rrf_k,
            "pool": pool,
            "lexical_weight": settings.search_lexical_weight,
            "dense_weight": settings.search_dense_weight,
        },
        "faiss": dataclasses.asdict(index_info),
        "timings_s": {**clock.phases, "total": clock.total()},
    }
    return report


# ----- output ----------------------------------------------------------------------------------------------
def _cell(value: dict | None) -> str:
    return "n/a" if value is None else f"{value['value']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"


def table_frame(report: dict) -> pd.DataFrame:
    """Method x metric (with intervals), and NDCG@10 on misspelled terms against the rest."""
    rows = []
    for name, result in report["methods"].items():
        row = {"method": name + (" (peer)" if name in report["peers"] else "")}
        row.update({metric: _cell(result[metric]) for metric in METRICS})
        row[f"{METRICS[0]} misspelled"] = _cell(result["misspelled"][METRICS[0]])
        row[f"{METRICS[0]} other"] = _cell(result["other"][METRICS[0]])
        rows.append(row)
    return pd.DataFrame(rows)


def print_table(report: dict) -> None:
    split = report["split"]
    table = Table(
        title=f"Home Depot search: {split['evaluated_terms']:,} test terms "
        f"({split['misspelled_terms']:,} misspelled) over {split['evaluated_items']:,} products (95% CI)"
    )
    frame = table_frame(report)
    for column in frame.columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*row)
    console.print(table)
    target = report["target"]
    ratio = target["aisle_over_best_peer_ndcg"]
    console.print(
        f"Aisle / best peer ({target['best_peer']}) NDCG@10: {ratio['value']:.3f} "
        f"[{ratio['ci_low']:.3f}, {ratio['ci_high']:.3f}] (goal >= {target['goal']}: "
        f"{'met' if target['met'] else 'not met'})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aisle evaluate-search", description="Search evaluation on Home Depot, Aisle against its peers."
    )
    parser.add_argument("--path", type=Path, default=home_depot.HOME_DEPOT_ZIP, help="the Home Depot zip")
    parser.add_argument(
        "--route",
        choices=sorted(LOADERS),
        default="dbt",
        help="where the training log comes from: the dbt warehouse built from the adapter's raw files "
        "(the governed route, default) or the adapter's frames directly",
    )
    parser.add_argument("--max-terms", type=int, help="quick run: this many terms (never for figures)")
    parser.add_argument("--max-items", type=int, help="quick run: a catalogue of about this many products")
    parser.add_argument("--out", type=Path, default=REPORTS, help="folder of the json and html reports")
    args = parser.parse_args(argv)
    if not args.path.exists():
        raise SystemExit(
            f"{args.path} is missing: aisle evaluate-search needs the Home Depot file in ../shared."
        )
    settings = evaluation_settings(Settings())
    cache = settings.search_evaluation_cache_dir or settings.data_dir / "cache"
    report = evaluate(settings, args.path, args.route, cache, args.max_terms, args.max_items)
    from scoring.evaluation.search_plots import write_html

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_evaluation.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    page = write_html(report, table_frame(report), args.out / "search_evaluation.html")
    console.print(
        f"wrote {args.out / 'search_evaluation.json'} and {page} in {report['timings_s']['total']:.0f} s"
    )


if __name__ == "__main__":
    main()
