"""`make score` on a demo shop with a large catalogue: the stage profile and peak memory of each night.

`python -m scoring.bench.catalogue` (part of `make bench`, `--only catalogue`) writes a grocery-cadence
demo shop of `--items` items (50,000 by default: a supermarket's catalogue, most of it rarely or never
sold) under data/bench/catalogue/ and runs `make score` on it `--nights` times in a process of its own
(scoring/bench/update.py `measured`: wall time, peak resident memory of the process and its children).
Each night's stage profile comes from the run's manifest. The second night finds the first night's
promoted run, as the nightly job does, so it shows what a night costs once the source knobs are tuned
(they are reused while the purchases barely moved: `retune_max_days`, `retune_min_change`).

What grows with the catalogue is bounded: EASE is fitted on the `ease_max_items` most-bought items, and
items are embedded once per run, each distinct text once. The figures are printed and written to
reports/bench_catalogue.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any

from rich.table import Table

from scoring.bench.serving import console, machine
from scoring.bench.update import measured
from scoring.pipeline.run_folder import RunFolder
from scoring.settings import ROOT, Settings

REPORT = ROOT / "reports" / "bench_catalogue.json"


def run(items: int = 50_000, users: int = 1_500, nights: int = 2) -> dict[str, Any]:
    """`make score` `nights` times on a fresh grocery demo shop of `items` items and `users` shoppers."""
    root = ROOT / "data" / "bench" / "catalogue"
    shutil.rmtree(root, ignore_errors=True)
    settings = Settings().model_copy(
        update={
            "source": "demo",
            "data_dir": root,
            "raw_path": root / "raw",
            "as_of": None,
            "demo_items": items,
            "demo_users": users,
            "demo_cadence": "grocery",
            "demo_pending_days": 0,
            "force_publish": True,
        }
    )
    load_before = os.getloadavg()
    results = []
    for night in range(1, nights + 1):
        figures = measured("score", settings)
        run = RunFolder.open((settings.runs_dir / "current").resolve())
        candidates = run.manifest["stages"]["candidates"]
        results.append(
            {
                "night": night,
                **figures,
                "stages_s": run.manifest["timings"],
                "items": run.manifest["stages"]["training_pairs"]["items"],
                "users": run.manifest["stages"]["training_pairs"]["users"],
                "tuning": candidates.get("tuning"),
            }
        )
    report = {
        "shop": {"items": items, "users": users, "cadence": "grocery"},
        "ease_max_items": settings.ease_max_items,
        "nights": results,
        "machine": machine(load_before),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    show(report)
    return report


def show(report: dict[str, Any]) -> None:
    shop = report["shop"]
    table = Table(title=f"make score on a {shop['items']:,}-item grocery demo ({shop['users']:,} users)")
    table.add_column("stage")
    for night in report["nights"]:
        table.add_column(f"night {night['night']} s", justify="right")
    stages = list(report["nights"][0]["stages_s"])
    for stage in stages:
        table.add_row(stage, *(f"{night['stages_s'].get(stage, 0):,.1f}" for night in report["nights"]))
    table.add_row("wall", *(f"{night['wall_s']:,.1f}" for night in report["nights"]))
    table.add_row("peak RSS MB", *(f"{night['peak_rss_mb']:,.0f}" for night in report["nights"]))
    console.print(table)
    console.print(f"Report: {REPORT}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scoring.bench.catalogue", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--items", type=int, default=50_000, help="the demo catalogue's items")
    parser.add_argument("--users", type=int, default=1_500, help="the demo shop's shoppers")
    parser.add_argument("--nights", type=int, default=2, help="make score runs, one after the other")
    args = parser.parse_args(argv)
    run(args.items, args.users, args.nights)


if __name__ == "__main__":
    main()
