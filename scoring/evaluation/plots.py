"""reports/evaluation.html: the metrics with their intervals, candidate recall and ranker importances."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from scoring.reports.page import render_page


def figures(report: dict) -> list[go.Figure]:
    """The page's figures, from the report that evaluation.json holds."""
    k = report["protocol"]["k"]
    methods = list(report["methods"])
    out = []
    for metric, title in ((f"ndcg@{k}", f"NDCG@{k}"), (f"recall@{k}", f"Recall@{k}")):
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
        out.append(fig)
    recall = {k: v for k, v in report["candidate_recall"].items() if k != "merged_candidates_per_user"}
    out.append(
        go.Figure(go.Bar(x=list(recall), y=list(recall.values()))).update_layout(
            title="Candidate recall of the test items, by source"
        )
    )
    importances = dict(list(report["ranker_importances"].items())[:15])
    out.append(
        go.Figure(go.Bar(x=list(importances.values()), y=list(importances), orientation="h")).update_layout(
            title="Ranker feature importance (share of gain)", yaxis={"autorange": "reversed"}
        )
    )
    return out


def write_html(report: dict, out: Path) -> Path:
    """Write the self-contained page and return its path."""
    protocol = report["protocol"]
    intro = (
        f"<p>UCI Online Retail (Chen, Sain and Guo, 2012; CC BY 4.0). Train before {protocol['cut']}, test "
        f"after; {protocol['users']:,} users with a purchase on each side, {protocol['items']:,} items.</p>"
    )
    out.write_text(render_page("Aisle offline evaluation", intro, figures(report)), encoding="utf-8")
    return out
