"""The shared page of every report: one self-contained HTML file, plotly's JavaScript inlined once, so it
opens anywhere, offline."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go


def table(frame: pd.DataFrame) -> str:
    """A frame as a plain HTML table, styled by the page."""
    return frame.to_html(index=False, border=0, classes="grid", na_rep="")


def render_page(title: str, intro: str, figures: list[go.Figure], outro: str = "") -> str:
    """One self-contained HTML page: plotly's JavaScript inlined once, then every figure."""
    plots = [
        fig.to_html(
            full_html=False, include_plotlyjs=(i == 0), div_id=f"plot-{i}", config={"responsive": True}
        )
        for i, fig in enumerate(figures)
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table.grid {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
table.grid th, table.grid td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; }}
table.grid td.alert {{ background: #fde2e4; color: #9b2226; font-weight: 600; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{intro}
{"".join(plots)}
{outro}
</body></html>
"""
