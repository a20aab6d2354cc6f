"""The data-quality report, one self-contained HTML file (reports/data_quality.html), by `aisle report`.

Why it exists: the dbt docs say what each rule means; this page shows what the rules did to this build's
data, so a reviewer sees at a glance where rows went (raw -> clean or quarantine), which rules fired and
when, how complete each column is, and what cleaning did to prices, quantities and item text. Plotly's
JavaScript is inlined, so the file opens anywhere, offline. Everything is aggregated in DuckDB first, so
the page stays small on millions of events.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from scoring.ingest.raw_contract import CONTRACT
from scoring.reports.page import render_page, table
from scoring.settings import ROOT, Settings
from scoring.warehouse import tables
from scoring.warehouse.quality import defect_scorecard

DEFAULT_OUT = ROOT / "reports" / "data_quality.html"
EVENT_COLUMNS = CONTRACT["events"]
# Log-spaced histogram bins, shared by "before" and "after" so the two bar sets line up.
LOG_BINS_PER_DECADE = 5


def _read(settings: Settings, sql: str) -> pd.DataFrame:
    return tables.read(settings, sql)


def rows_through_stages(settings: Settings) -> go.Figure:
    """Raw rows per relation split into clean and quarantined, then what the marts hold."""
    rec = _read(settings, "select relation, raw_rows, clean_rows, quarantined_rows from fct_row_conservation")
    marts = _read(
        settings,
        "select 'order lines' as stage, count(*) as n from fct_order_lines"
        " union all select 'sessions', count(*) from fct_sessions"
        " union all select 'items', count(*) from dim_items"
        " union all select 'users', count(*) from dim_users",
    )
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Raw rows: clean or quarantined", "Rows in the marts")
    )
    for column, name, colour in (
        ("raw_rows", "raw", "#888"),
        ("clean_rows", "clean", "#2a9d8f"),
        ("quarantined_rows", "quarantined", "#e76f51"),
    ):
        fig.add_bar(
            x=rec.relation, y=rec[column], name=name, marker_color=colour, text=rec[column], row=1, col=1
        )
    fig.add_bar(
        x=marts.stage, y=marts.n, name="mart rows", marker_color="#264653", text=marts.n, row=1, col=2
    )
    fig.update_layout(title="Rows through each stage", barmode="group")
    return fig


def quarantine_by_rule(settings: Settings) -> go.Figure:
    """How many rows each rule rejected, coloured by its quality dimension."""
    counts = _read(
        settings,
        "select rule_code, coalesce(dimension, 'unknown') as dimension, count(*) as n"
        " from fct_quarantine_rules group by 1, 2 order by n desc",
    )
    fig = go.Figure()
    for dimension, part in counts.groupby("dimension", sort=False):
        fig.add_bar(x=part.rule_code, y=part.n, name=dimension)
    fig.update_layout(title="Quarantined rows by rule", xaxis_title="rule", yaxis_title="rows")
    return fig


def quarantine_over_time(settings: Settings) -> go.Figure:
    """Rejected event rows per week of their timestamp and rule; unparseable and future times are left out
    (they would stretch the axis to nowhere; the rule chart counts them)."""
    weekly = _read(
        settings,
        "select date_trunc('week', c.event_at) as week, r.rule_code, count(*) as n"
        " from fct_quarantine_rules as r"
        " inner join intermediate.int_events_checked as c on r.row_key = c.row_key"
        " where c.event_at <= current_timestamp group by 1, 2 order by 1",
    )
    fig = go.Figure()
    for rule, part in weekly.groupby("rule_code"):
        fig.add_bar(x=part.week, y=part.n, name=rule)
    fig.update_layout(
        title="Quarantined events over time (by week)",
        barmode="stack",
        xaxis_title="week",
        yaxis_title="rows",
    )
    return fig


def null_rates(settings: Settings) -> go.Figure:
    """Share of nulls per event column, over every raw row and over the clean rows."""
    selects = ", ".join(f"avg(case when {c} is null then 1.0 else 0.0 end) as {c}" for c in EVENT_COLUMNS)
    before = _read(settings, f"select {selects} from intermediate.int_events_checked").iloc[0]
    after = _read(settings, f"select {selects} from intermediate.int_events_clean").iloc[0]
    fig = go.Figure()
    fig.add_bar(x=list(EVENT_COLUMNS), y=before.to_numpy(), name="all raw rows", marker_color="#888")
    fig.add_bar(x=list(EVENT_COLUMNS), y=after.to_numpy(), name="clean rows", marker_color="#2a9d8f")
    fig.update_layout(
        title="Null rate by event column", barmode="group", yaxis_tickformat=".0%", yaxis_title="null rate"
    )
    return fig


def _log_histogram(settings: Settings, column: str) -> pd.DataFrame:
    """Purchase lines per log10 bin of a positive column, before (all rows) and after cleaning."""
    bin_expr = f"floor(log10({column}) * {LOG_BINS_PER_DECADE}) / {LOG_BINS_PER_DECADE}"
    sql = (
        f"select 'before' as stage, {bin_expr} as bin, count(*) as n"
        f" from intermediate.int_events_checked where event_type = 'purchase' and {column} > 0 group by 2"
        f" union all select 'after', {bin_expr}, count(*)"
        f" from intermediate.int_events_clean where event_type = 'purchase' and {column} > 0 group by 2"
        " order by 1, 2"
    )
    frame = _read(settings, sql)
    # Bins as labels ("0.1", "0.158", ...) on a category axis, so bars keep their width on a log scale.
    frame["from"] = [f"{10**b:.3g}" for b in frame.bin.astype(float)]
    return frame.sort_values("bin")


def distributions(settings: Settings) -> go.Figure:
    """Unit price and quantity of purchase lines, before and after cleaning (log-spaced bins)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Unit price", "Quantity"))
    for col, column in enumerate(("unit_price", "quantity"), start=1):
        frame = _log_histogram(settings, column)
        for stage, colour in (("before", "#888"), ("after", "#2a9d8f")):
            part = frame[frame.stage == stage]
            fig.add_bar(
                x=part["from"],
                y=part.n,
                name=f"{column} {stage} cleaning",
                marker_color=colour,
                opacity=0.7,
                row=1,
                col=col,
            )
        order = sorted(set(frame["from"]), key=float)
        fig.update_xaxes(
            type="category",
            categoryorder="array",
            categoryarray=order,
            title_text=f"{column}, lower edge of a log-spaced bin",
            row=1,
            col=col,
        )
        fig.update_yaxes(type="log", title_text="purchase lines", row=1, col=col)
    fig.update_layout(
        title="Price and quantity distributions before and after cleaning (positive values)",
        barmode="overlay",
    )
    return fig


def item_text(settings: Settings) -> go.Figure:
    """Title length of the clean items, and the most common categories."""
    lengths = _read(
        settings, "select length(title) as chars, count(*) as n from dim_items group by 1 order by 1"
    )
    categories = _read(
        settings,
        "select coalesce(category, '(none)') as category, count(*) as n from dim_items"
        " group by 1 order by n desc, category limit 20",
    )
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Item title length (characters)", "Top categories (items)")
    )
    fig.add_bar(
        x=lengths.chars, y=lengths.n, name="items by title length", marker_color="#264653", row=1, col=1
    )
    fig.add_bar(
        x=categories.n[::-1],
        y=categories.category[::-1],
        orientation="h",
        name="items by category",
        marker_color="#e9c46a",
        row=1,
        col=2,
    )
    fig.update_layout(title="Item titles and categories", showlegend=False)
    return fig


def build(settings: Settings, out: Path = DEFAULT_OUT) -> Path:
    """Write the report and return its path."""
    figures = [
        rows_through_stages(settings),
        quarantine_by_rule(settings),
        quarantine_over_time(settings),
        null_rates(settings),
        distributions(settings),
        item_text(settings),
    ]
    reconciliation = _read(settings, "select * from fct_row_conservation order by relation")
    rules = _read(
        settings,
        "select rules.rule_code, rules.dimension, rules.action, count(q.row_key) as rows, rules.description"
        " from governance.rules as rules left join fct_quarantine_rules as q using (rule_code)"
        " group by all order by rows desc, rules.rule_code",
    )
    source = html.escape(f"{settings.source} ({settings.resolved_raw_path})")
    intro = (
        f"<p>Source: {source}. Built from the dbt warehouse {html.escape(str(settings.warehouse_path))}.</p>"
        f"<h2>Reconciliation: raw = clean + quarantined</h2>{table(reconciliation)}"
    )
    outro = f"<h2>Rules</h2>{table(rules)}"
    if (settings.resolved_raw_path / "_truth" / "defects.parquet").exists():
        # The demo shop records every defect it injects: how exactly each rule caught its class.
        card = defect_scorecard(settings).round({"recall": 4, "precision": 4})
        outro += f"<h2>Rules against the demo shop's known defects (1.0 is the bar)</h2>{table(card)}"
    page = render_page("Aisle data quality", intro, figures, outro)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
