"""`aisle report`: the data-quality page is self-contained and really renders its plots in a browser
(headless Chromium, installed by the Makefile's test set-up), not just as HTML text."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from scoring.reports import cli
from scoring.reports.data_quality import build
from scoring.settings import Settings

TITLES = (
    "Rows through each stage",
    "Quarantined rows by rule",
    "Quarantined events over time (by week)",
    "Null rate by event column",
    "Price and quantity distributions before and after cleaning (positive values)",
    "Item titles and categories",
)


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
    ]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def report(workspace: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(workspace, tmp_path_factory.mktemp("report") / "data_quality.html")


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text()
    assert not re.search(r"<script[^>]+src=", page), "every script must be inlined"
    assert page.count("Plotly.newPlot") == len(TITLES)
    assert "is_balanced" in page and "duplicate_row" in page


def test_aisle_report_writes_where_it_is_told(
    workspace: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    for key, value in workspace.environ().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AISLE_DATA_DIR", str(workspace.data_dir))
    out = tmp_path / "page.html"
    cli.main(["--out", str(out)])
    # The runs page goes beside it (tests/test_runs_report.py covers its content).
    assert capsys.readouterr().out.split() == [str(out), str(tmp_path / "runs.html")]
    assert out.read_text().count("Plotly.newPlot") == len(TITLES)
    assert (tmp_path / "runs.html").exists()


def test_report_renders_in_headless_chromium(report: Path, chromium: str, tmp_path: Path) -> None:
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    # Plotly draws each figure into SVG at load time; titles exist only once the JavaScript has run.
    assert dom.count('class="main-svg"') >= len(TITLES)
    rendered_titles = re.findall(r'class="gtitle"[^>]*>([^<]+)<', dom)
    assert set(TITLES) <= {html_title.replace("&amp;", "&") for html_title in rendered_titles}
    assert dom.count('class="trace bars"') >= len(TITLES), "bar traces must be drawn"
    shot = tmp_path / "data_quality.png"
    _headless(
        chromium, tmp_path / "profile", "--window-size=1400,4200", f"--screenshot={shot}", report.as_uri()
    )
    assert shot.stat().st_size > 50_000
