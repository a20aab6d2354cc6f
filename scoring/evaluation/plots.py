"""reports/evaluation.html: for each cut, a table of every metric with its interval, the target, the ranker's
AUC and the tuned peers' knobs, the new-items table and its target, the ablation table, then the plots:
NDCG and recall over all, novel and new items, precision, F1, MAP and hit rate, the ablation, the
NDCG-against-diversity trade-off, the top and discover lists, candidate recall and the ranker's
importances."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from scoring.evaluation.protocol import TARGET_RATIO
from scoring.reports.page import render_page, table


def _error_y(values: list[dict]) -> dict:
    return {
        "type": "data",
        "symmetric": False,
        "array": [v["ci_high"] - v["value"] for v in values],
        "arrayminus": [v["value"] - v["ci_low"] for v in values],
    }


def _bars(title: str, x: list[str], series: dict[str, list[dict]]) -> go.Figure:
    """Grouped bars, one group per x, one bar per series, each with its interval."""
    fig = go.Figure()
    for label, values in series.items():
        fig.add_bar(name=label, x=x, y=[v["value"] for v in values], error_y=_error_y(values))
    return fig.update_layout(title=title, barmode="group")


def cut_figures(name: str, cut: dict) -> list[go.Figure]:
    """One cut's figures, from its part of the report."""
    k, methods = cut["protocol"]["k"], cut["methods"]
    names = list(methods)
    at = f"{name} cut {cut['protocol']['cut']}"
    out = [
        _bars(
            f"{at}: {title}@{k} with 95% bootstrap intervals",
            names,
            {
                label: [methods[m][metric + suffix] for m in names]
                for suffix, label in (("", "all items"), ("_novel", "novel items"), ("_new", "new items"))
            },
        )
        for metric, title in ((f"ndcg@{k}", "NDCG"), (f"recall@{k}", "Recall"))
    ]
    out.append(
        _bars(
            f"{at}: precision, F1, MAP and hit rate @{k}, all items",
            names,
            {
                label: [methods[m][f"{metric}@{k}"] for m in names]
                for metric, label in (
                    ("precision", "precision"),
                    ("f1", "F1"),
                    ("map", "MAP"),
                    ("hit_rate", "hit rate"),
                )
            },
        )
    )
    rows = cut["ablation"]["rows"]
    out.append(
        _bars(
            f"{at}: what BERT adds, Aisle's NDCG@{k} by encoder (ablation)",
            list(rows),
            {
                label: [rows[row][f"ndcg@{k}{suffix}"] for row in rows]
                for suffix, label in (("", "all items"), ("_novel", "novel items"), ("_new", "new items"))
            },
        )
    )
    points = cut["diversity_tradeoff"]
    ndcg, ild = [p[f"ndcg@{k}"] for p in points], [p[f"diversity@{k}"] for p in points]
    out.append(
        go.Figure(
            go.Scatter(
                x=[v["value"] for v in ild],
                y=[v["value"] for v in ndcg],
                text=[p["setting"] for p in points],
                mode="markers+text",
                textposition="top center",
                error_x=_error_y(ild),
                error_y=_error_y(ndcg),
            )
        ).update_layout(
            title=f"{at}: Aisle's top list, NDCG@{k} against intra-list diversity",
            xaxis_title=f"intra-list diversity@{k} (share of pairs in different categories)",
            yaxis_title=f"NDCG@{k}",
        )
    )
    lists = cut["lists"]
    out.append(
        _bars(
            f"{at}: NDCG@{k} of the top list and of the discover list",
            list(lists),
            {
                label: [lists[name_][metric] for name_ in lists]
                for metric, label in ((f"ndcg@{k}", "all items"), (f"ndcg@{k}_novel", "novel items"))
            },
        )
    )
    recall = {s: v for s, v in cut["candidate_recall"].items() if s != "merged_candidates_per_user"}
    out.append(
        go.Figure(go.Bar(x=list(recall), y=list(recall.values()))).update_layout(
            title=f"{at}: candidate recall of the test items, by source"
        )
    )
    importances = dict(list(cut["ranker_importances"].items())[:15])
    out.append(
        go.Figure(go.Bar(x=list(importances.values()), y=list(importances), orientation="h")).update_layout(
            title=f"{at}: ranker feature importance (share of gain)", yaxis={"autorange": "reversed"}
        )
    )
    return out


def metrics_frame(cut: dict) -> pd.DataFrame:
    """Every method's metrics as text, value [95% interval], one row per method."""
    return pd.DataFrame(
        [
            {"method": method, **{key: _text(value) for key, value in metrics.items()}}
            for method, metrics in cut["methods"].items()
        ]
    )


def cut_section(name: str, cut: dict) -> str:
    """One cut's tables and facts, as HTML."""
    protocol, k = cut["protocol"], cut["protocol"]["k"]
    targets = "".join(
        f"<li>NDCG@{k} {html.escape(column)}: Aisle {t['aisle']:.3f} / {html.escape(t['best_peer'])} "
        f"{t['peer']:.3f} = {t['ratio']:.3f} ({'met' if t['met'] else 'not met'})</li>"
        for column, t in cut["target"].items()
    )
    knobs = "".join(
        f"<li>{html.escape(peer)}: {html.escape(json.dumps(params))}</li>"
        for peer, params in cut["tuned_params"].items()
    )
    return (
        f"<h2>{html.escape(name)} cut: train before {protocol['cut']}, test to "
        f"{protocol['test_end'] or 'the end of the data'}</h2>"
        f"<p>{protocol['users']:,} users with a purchase on each side, {protocol['items']:,} items, "
        f"k = {k}. The ranker's AUC on its own holdout: {cut['ranker_auc']}.</p>"
        f"<p>Target: Aisle at least {TARGET_RATIO:.2f} &times; the best in-run peer.</p><ul>{targets}</ul>"
        f"<p>Tuned peers' knobs, chosen on the last {protocol['validation_days']} days of the train window "
        f"and frozen:</p><ul>{knobs}</ul>"
        + table(metrics_frame(cut))
        + new_items_section(cut["new_items"], k)
        + ablation_section(cut["ablation"], k)
        + "<p>Aisle's top list at each diversity setting, and the top list beside the discover list:</p>"
        + table(_text_frame(cut["diversity_tradeoff"], "setting", (f"ndcg@{k}", f"diversity@{k}")))
        + table(
            _text_frame(
                [{"list": name_, **row} for name_, row in cut["lists"].items()],
                "list",
                (f"ndcg@{k}", f"ndcg@{k}_novel", "new_items_per_list"),
            )
        )
    )


def new_items_section(new: dict, k: int) -> str:
    """The new-items table and its target, as HTML."""
    head = (
        f"<h3>New items</h3><p>{new['items']:,} items first sold in the test window, listed at the cut with "
        f"their titles and no sales; {new['share_of_test_items']:.1%} of the evaluated users' test items; "
        f"{new['users']:,} users bought one. Over new items, only they are in the truth and the list.</p>"
    )
    rows = [{"method": method, **row} for method, row in new["methods"].items()]
    columns = (f"ndcg@{k}_new", f"recall@{k}_new", f"ndcg@{k}", f"recall@{k}")
    t = new.get("target")
    verdict = (
        f"<p>Target on new items: Aisle {t['aisle']:.3f} / {html.escape(t['best_peer'])} {t['peer']:.3f} = "
        f"{t['ratio']:.3f}, at least {TARGET_RATIO:.2f} ({'met' if t['met'] else 'not met'}).</p>"
        if t
        else "<p>No evaluated user bought a new item: no target.</p>"
    )
    return head + table(_text_frame(rows, "method", columns)) + verdict


def ablation_section(part: dict, k: int) -> str:
    """The ablation table, as HTML: each row's NDCG@k in every view and the fine-tuned row's lead over it."""
    columns = tuple(
        f"{prefix}ndcg@{k}{suffix}"
        for prefix in ("", "fine_tuned_lead_")
        for suffix in ("", "_novel", "_new")
    )
    rows = [
        {"row": name, **{c: row.get(c, "") for c in columns}, "holdout NDCG": row["holdout_ndcg"]}
        for name, row in part["rows"].items()
    ]
    gate = part.get("embedding_gate")
    verdict = (
        f" The run's embedding gate {'kept' if gate['kept'] else 'dropped'} the encoder's candidates "
        f"(holdout NDCG {gate['holdout_ndcg_with']} with them, {gate['holdout_ndcg_without']} without)."
        if gate
        else ""
    )
    return (
        f"<h3>What BERT adds (ablation)</h3><p>Aisle's candidates and ranker rerun without the encoder's "
        f"candidates and features, with the base model's zero-shot vectors and with the run's vectors; the "
        f"run shipped the {html.escape(str(part['encoder_shipped']))} encoder.{verdict} A lead is the "
        "fine-tuned row's minus this row's, with a paired 95% bootstrap interval.</p>"
        + table(_text_frame(rows, "row", (*columns, "holdout NDCG")))
    )


def _text_frame(rows: list[dict], label: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows of a report part as text: an interval as value [low, high], a number as it is."""
    return pd.DataFrame([{label: row[label], **{c: _text(row[c]) for c in columns}} for row in rows])


def _text(value: dict | float) -> str | float:
    return (
        f"{value['value']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
        if isinstance(value, dict)
        else value
    )


def write_html(report: dict, out: Path) -> Path:
    """Write the self-contained page and return its path."""
    source = " (Chen, Sain and Guo, 2012; CC BY 4.0)" if report["shop"] == "online_retail" else ""
    intro = (
        f"<p>Shop: {html.escape(report['shop'])}{source}. Metrics and protocol: docs/protocols.md. "
        "Intervals: 95% percentile bootstrap over users.</p>"
        + "".join(cut_section(name, cut) for name, cut in report["cuts"].items())
    )
    figures = [fig for name, cut in report["cuts"].items() for fig in cut_figures(name, cut)]
    out.write_text(render_page("Aisle offline evaluation", intro, figures), encoding="utf-8")
    return out
