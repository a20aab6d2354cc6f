"""The runs page (reports/runs.html, by `aisle report`): how quality moved from run to run.

Why it exists: each nightly run is judged alone by the gate, but a slow slide (more rows quarantined, a
quality dimension slipping, features drifting while the ranker still passes) only shows across runs. Per
run the page shows the ranker's offline figures and the gate's, the gate outcome, rows quarantined per
rule, the data-quality index per dimension and PSI drift per feature, alerts highlighted. It reads the
run history (history.py), which survives pruning, plus any finished run folder the history lacks (runs
from before the history existed). Self-contained like every report (page.py).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from scoring.reports import history
from scoring.reports.page import render_page, table
from scoring.reports.quality_index import DIMENSIONS
from scoring.settings import ROOT, Settings

DEFAULT_OUT = ROOT / "reports" / "runs.html"
TITLES = {
    "metrics": "Offline metrics by run (encoder held-out recall, ranker holdout and gate)",
    "quarantine": "Quarantined rows by rule, per run",
    "quality": "Data-quality index by dimension (0-100)",
    "drift": "Feature drift (PSI) against the last promoted run",
}


def runs(settings: Settings) -> list[dict[str, Any]]:
    """Every finished run, oldest first: the history, plus run folders it lacks (still running excluded)."""
    known = {entry["run_id"]: entry for entry in history.read(settings)}
    for manifest_path in settings.runs_dir.glob("*/manifest.json"):
        if manifest_path.parent.is_symlink():
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest["run_id"] not in known and manifest.get("status") != "running":
            known[manifest["run_id"]] = history.entry(manifest)
    return [known[key] for key in sorted(known)]


def _figures(record: dict[str, Any], prefix: str = "") -> dict[str, int | float]:
    """The numeric figures of a record (nested dicts flattened to dotted names, booleans left out)."""
    out: dict[str, int | float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_figures(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out


def _monitor(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("monitor") or {}


def gate_outcome(entry: dict[str, Any]) -> str:
    """The gate's word on the run, else the run's status (a run from before the gate existed)."""
    gate = entry.get("gate") or {}
    return str(gate.get("outcome") or gate.get("decision") or entry.get("status") or "")


def metrics_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Per run: the encoder's held-out recall (zero-shot, promoted, fine-tuned) and which one shipped, the
    ranker's holdout figures, the gate's figures (NDCGs and margin), and the outcome."""
    rows = []
    for entry in entries:
        encoder = entry.get("encoder") or {}
        row: dict[str, Any] = {
            "run": entry["run_id"],
            "status": entry.get("status"),
            "gate": gate_outcome(entry),
            "encoder shipped": encoder.get("shipped") or "",
        }
        row.update({f"encoder {k}": v for k, v in _figures(encoder.get("held_out") or {}).items()})
        row.update({f"holdout {k}": v for k, v in _figures(entry.get("holdout") or {}).items()})
        row.update({f"gate {k}": v for k, v in _figures(entry.get("gate") or {}).items()})
        row["gate message"] = (entry.get("gate") or {}).get("message", "")  # a refused or forced run's
        rows.append(row)
    return pd.DataFrame(rows)


def quarantine_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Rules with a quarantined row in some run (rows) by run (columns); blank for a run not monitored."""
    columns = {e["run_id"]: _monitor(e).get("quarantine", {}) for e in entries}
    frame = pd.DataFrame(columns, columns=list(columns)).astype("Int64")
    return frame[frame.sum(axis=1) > 0].rename_axis("rule").reset_index()


def quality_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Dimensions by run: the index (None where a dimension had no tests)."""
    data = {
        e["run_id"]: {
            d: v.get("index") for d, v in _monitor(e).get("quality", {}).get("dimensions", {}).items()
        }
        for e in entries
    }
    return pd.DataFrame(data, index=list(DIMENSIONS)).rename_axis("dimension")


def drift_frame(entries: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features by run: PSI against each run's reference, and whether it is an alert."""
    drifts = {e["run_id"]: _monitor(e).get("drift", {}) for e in entries}
    psi = pd.DataFrame({run: {f: d.get("psi") for f, d in feats.items()} for run, feats in drifts.items()})
    alert = pd.DataFrame(
        {run: {f: d.get("alert") for f, d in feats.items()} for run, feats in drifts.items()}
    )
    psi = psi.sort_index()
    return psi, alert.reindex_like(psi).eq(True)  # a missing flag is no alert


def metrics_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for column in frame.columns:
        if (
            column.startswith(("holdout ", "gate "))
            and ("ndcg" in column or "auc" in column)
            or (column.startswith("encoder ") and "recall" in column)
        ):
            fig.add_scatter(x=frame.run, y=frame[column], mode="lines+markers", name=column)
    fig.update_layout(title=TITLES["metrics"], xaxis_title="run", yaxis_title="value", xaxis_type="category")
    return fig


def quarantine_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    counts = frame.set_index("rule").astype(float)
    for rule, row in counts.iterrows():
        fig.add_bar(x=list(counts.columns), y=row.to_numpy(), name=str(rule))
    fig.update_layout(
        title=TITLES["quarantine"],
        barmode="stack",
        xaxis_title="run",
        yaxis_title="rows",
        xaxis_type="category",
    )
    return fig


def quality_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for dimension, row in frame.iterrows():
        fig.add_scatter(x=list(frame.columns), y=row.to_numpy(), mode="lines+markers", name=str(dimension))
    fig.update_layout(
        title=TITLES["quality"],
        xaxis_title="run",
        yaxis_title="index",
        yaxis_range=[0, 105],
        xaxis_type="category",
    )
    return fig


def drift_figure(psi: pd.DataFrame, alert_psi: float) -> go.Figure:
    """PSI per feature (rows) and run (columns) as a heatmap: blues below the alert threshold, reds from
    it up (the colour scale breaks at the threshold), each cell labelled with its value."""
    scale = [[0.0, "#f1faee"], [0.25, "#a8dadc"], [0.4999, "#457b9d"], [0.5, "#e63946"], [1.0, "#6a040f"]]
    fig = go.Figure(
        go.Heatmap(
            z=psi.to_numpy(dtype=float),
            x=list(psi.columns),
            y=list(psi.index),
            zmin=0,
            zmax=2 * alert_psi,
            colorscale=scale,
            colorbar={"title": "PSI"},
            texttemplate="%{z:.3f}",
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title=f"{TITLES['drift']} (alert at {alert_psi})",
        xaxis_title="run",
        xaxis_type="category",
        yaxis_autorange="reversed",
        height=220 + 22 * len(psi.index),
    )
    return fig


def drift_table(psi: pd.DataFrame, alert: pd.DataFrame) -> str:
    """PSI per feature (rows) and run (columns); an alert cell has class `alert`, a missing one is blank."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["feature", *psi.columns])
    body = []
    for feature in psi.index:
        cells = [f"<td>{html.escape(str(feature))}</td>"]
        for run in psi.columns:
            value = psi.at[feature, run]
            text = "" if pd.isna(value) else f"{value:.4f}"
            css = ' class="alert"' if alert.at[feature, run] else ""
            cells.append(f"<td{css}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="grid drift"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def build(settings: Settings, out: Path = DEFAULT_OUT) -> Path:
    """Write the runs page and return its path."""
    entries = runs(settings)
    if not entries:
        folder = html.escape(str(settings.runs_dir))
        intro = f"<p>No finished runs in {folder} yet: run <code>make score</code>.</p>"
        page = render_page("Aisle runs", intro, [])
    else:
        metrics = metrics_frame(entries)
        quarantine = quarantine_frame(entries)
        quality = quality_frame(entries)
        psi, alert = drift_frame(entries)
        references = pd.DataFrame(
            [
                {
                    "run": e["run_id"],
                    "drift measured against": _monitor(e).get("reference_run") or "(no promoted run)",
                    "alerts": ", ".join(_monitor(e).get("drift_alerts", [])),
                }
                for e in entries
            ]
        )
        intro = (
            f"<p>{len(entries)} runs of {html.escape(str(settings.runs_dir))}, oldest first. Definitions: "
            "docs/monitoring.md.</p>"
            f"<h2>Offline metrics and gate outcome</h2>{table(metrics)}"
        )
        outro = (
            f"<h2>Quarantined rows per rule</h2>{table(quarantine.astype('string').fillna(''))}"
            f"<h2>Data-quality index per dimension</h2>{table(quality.reset_index())}"
            f"<h2>Feature drift (PSI; alert at {settings.drift_alert_psi})</h2>{table(references)}"
            f"{drift_table(psi, alert)}"
        )
        figures = [
            metrics_figure(metrics),
            quarantine_figure(quarantine),
            quality_figure(quality),
            drift_figure(psi, settings.drift_alert_psi),
        ]
        page = render_page("Aisle runs", intro, figures, outro)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
