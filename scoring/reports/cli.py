"""`aisle report`: write the live workspace's data-quality page (reports/data_quality.html) and the runs
page (reports/runs.html, run over run: metrics, gate, quarantine, quality index, drift)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scoring.reports import data_quality, runs
from scoring.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aisle report",
        description="The data-quality report of the live workspace and the runs page, one HTML file each.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=data_quality.DEFAULT_OUT,
        help=f"where to write the data-quality page ({data_quality.DEFAULT_OUT})",
    )
    parser.add_argument(
        "--runs-out",
        type=Path,
        default=None,
        help="where to write the runs page (default: runs.html beside the data-quality page)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    print(data_quality.build(settings, args.out))
    print(runs.build(settings, args.runs_out or args.out.with_name("runs.html")))


if __name__ == "__main__":
    main()
