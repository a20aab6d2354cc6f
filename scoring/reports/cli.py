"""`aisle report`: write the data-quality page of the live workspace (reports/data_quality.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scoring.reports.data_quality import DEFAULT_OUT, build
from scoring.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="aisle report", description="The data-quality report of the live workspace, one HTML file."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write it ({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    print(build(Settings(), args.out))


if __name__ == "__main__":
    main()
