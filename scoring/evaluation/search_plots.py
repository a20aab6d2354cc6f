"""reports/search_evaluation.html: the search evaluation's table and plots (metrics with intervals, misspelled
against other terms, zero-shot against fine-tuned, the fine-tuning loss and the ranker's features)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from scoring.reports.page import render_page, table


def _bars(fig: go.Figure, name: str, labels: list[str], values: list[dict | None]) -> None:
    present = [(label, v) for label, v in zip(labels, values, strict=True) if v is not None]
    fig.add_bar(
        name=name,
        x=[label for label, _ in present],
        y=[v["value"] for _, v in present],
        error_y={
            "type": "data",
            "symmetric": False,
            "array": [v["ci_high"] - v["value"] for _, v in present],
            "arrayminus": [v["value"] - v["ci_low"] for _, v in present],
        },
    )


def figures(report: dict) -> list[go.Figure]:
    """The page's figures, from the report search_evaluation.json holds."""
    methods = list(report["methods"])
    metric_names = [m for m in next(iter(report["methods"].values())) if "@" in m]
    out = []
    fig = go.Figure()
    for metric in metric_names:
        _bars(fig, metric, methods, [report["methods"][m][metric] for m in methods])
    out.append(
        fig.update_layout(title="Every method, every metric (95% bootstrap intervals)", barmode="group")
    )
    ndcg = metric_names[0]
    fig = go.Figure()
    for part in ("misspelled", "other"):
        _bars(fig, f"{part} terms", methods, [report["methods"][m][part][ndcg] for m in methods])
    out.append(fig.update_layout(title=f"{ndcg}: misspelled terms against the rest", barmode="group"))
    pair = report["zero_shot_vs_finetuned"]
    fig = go.Figure()
    _bars(fig, ndcg, ["zero-shot", "fine-tuned"], [pair["zero_shot"], pair["fine_tuned"]])
    out.append(
        fig.update_layout(title=f"Dense retrieval alone, {ndcg}: zero-shot against fine-tuned query encoder")
    )
    curve = report.get("finetune_loss_curve") or []
    if curve:
        out.append(
            go.Figure(
                go.Scatter(x=[s for s, _ in curve], y=[v for _, v in curve], mode="lines")
            ).update_layout(
                title="Fine-tuning loss (full-catalogue softmax)", xaxis_title="step", yaxis_title="loss"
            )
        )
    importances = dict(list(report["ranker"]["importances"].items())[:15])
    out.append(
        go.Figure(go.Bar(x=list(importances.values()), y=list(importances), orientation="h")).update_layout(
            title="Search ranker feature importance (share of gain)", yaxis={"autorange": "reversed"}
        )
    )
    return out


def write_html(report: dict, summary: pd.DataFrame, out: Path) -> Path:
    """Write the self-contained page, with `summary` (the evaluation's method x metric table) as its
    table, and return its path."""
    split, target = report["split"], report["target"]
    ratio = target["aisle_over_best_peer_ndcg"]
    intro = (
        "<p>Home Depot Product Search Relevance (Kaggle, 2016): real search terms with human grades 1-3. "
        f"{split['evaluated_terms']:,} test terms ({split['misspelled_terms']:,} misspelled), as typed, over "
        f"{split['evaluated_items']:,} products; the other {split['train_terms']:,} terms are the training "
        f"search log ({html.escape(split['training_log_route'])}).</p>"
        f"<p>Aisle over the best peer ({html.escape(target['best_peer'])}), NDCG@10: "
        f"<b>{ratio['value']:.3f}</b> [{ratio['ci_low']:.3f}, {ratio['ci_high']:.3f}] "
        f"(goal {target['goal']}).</p>" + table(summary)
    )
    protocol = "".join(
        f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in report["protocol"].items()
    )
    outro = f"<h2>Protocol</h2><ul>{protocol}</ul>"
    out.write_text(render_page("Aisle search evaluation", intro, figures(report), outro), encoding="utf-8")
    return out
