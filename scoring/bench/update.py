"""The last day through `make update` against a full `make score` of the same data: wall time and peak
memory (target: the update takes <= 10% of the full run).

`python -m scoring.bench.update` (part of `make bench`) cuts the shop by date into two workspaces under
data/bench/update/<shop>/:
  full    every day has arrived; measured: `make score` (scoring.pipeline.job.run), from raw files to
          the publication, as the nightly job runs;
  update  the last day waits in the raw folder's _pending/; `make score` on the days before it (not
          measured, it only sets the update up), then that day is released (arrivals.release_next_day),
          as the nightly transfer would, and `make update` (scoring.pipeline.update.run) is measured.
Online Retail (the default shop, ../shared/datasets/online_retail.csv.gz; skipped with a message when it
is absent) is cut with arrivals.cut_by_day: the initial file is every invoice line before the last day
with invoices, the drop that day. The demo shop (`--shop demo`, sizes from the AISLE_DEMO_* settings) is
written with one pending day (AISLE_DEMO_PENDING_DAYS=1), a quick check of the same path.

Each measured command runs in a process of its own: its wall time is the parent's clock around it, its
peak memory the largest resident set of that process and the processes it waited for (dbt, Feast;
run_folder.peak_rss_mb), so neither run's figure includes the other's. Both runs publish whatever the
publish gate says (force_publish): the bench times the work, not the gate's verdict. `--reference base`
skips the full run and compares the update with the measured `make score` of every day but the last
(one day less data than the full run; the report says which reference it used), for when two full runs
do not fit in the time at hand. The figures are printed and written to reports/bench_update.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from scoring.bench.serving import console, machine
from scoring.ingest import arrivals
from scoring.settings import ROOT, SHARED_ONLINE_RETAIL, Settings

REPORT = ROOT / "reports" / "bench_update.json"
TARGET_RATIO = 0.10
Shop = Literal["online_retail", "demo"]

# What the measured process runs: one command's work in a process of its own, then its peak memory.
MEASURED = """
import json, sys
from scoring.pipeline.run_folder import peak_rss_mb
from scoring.settings import Settings
settings = Settings(**json.loads(sys.argv[2]))
if sys.argv[1] == "update":
    from scoring.pipeline.update import run
else:
    from scoring.pipeline.job import run
run(settings)
with open(sys.argv[3], "w") as out:
    out.write(str(peak_rss_mb()))
"""


def workspaces(base: Settings, shop: Shop, root: Path) -> dict[str, Settings]:
    """The full and the update workspace of `shop` under `root`, each with its own raw folder."""
    spaces = {}
    for name in ("full", "update"):
        update: dict[str, Any] = {
            "source": shop,
            "data_dir": root / name,
            "raw_path": root / name / "raw",
            "as_of": None,
            "force_publish": True,
        }
        if shop == "demo":  # the update's shop holds its last day back
            update["demo_pending_days"] = int(name == "update")
        spaces[name] = base.model_copy(update=update)
    return spaces


def cut(shop: Shop, source: Path, spaces: dict[str, Settings]) -> dict[str, Any]:
    """Write both raw folders: the update's with its last day pending, the full one with every day."""
    if shop == "demo":
        from scoring.ingest.prepare import prepare_raw

        for settings in spaces.values():
            prepare_raw(settings)
        pending = sorted(arrivals.pending_dir(spaces["update"].resolved_raw_path).iterdir())
        return {"drop": [p.name for p in pending]}
    update_raw = spaces["update"].resolved_raw_path
    files = arrivals.cut_by_day(source, update_raw, 1, pending=True)
    full_raw = spaces["full"].resolved_raw_path
    full_raw.mkdir(parents=True)
    for path in files:  # the same bytes, every day arrived: links, not copies
        os.link(path, full_raw / path.name)
    return {"source": str(source), "initial": files[0].name, "drop": [p.name for p in files[1:]]}


def measured(command: str, settings: Settings) -> dict[str, float]:
    """Run `command` (score or update) on `settings` in its own process: wall seconds, peak RSS."""
    payload = json.dumps(settings.model_dump(mode="json", exclude={"serve_token"}))
    peak = settings.data_dir / f"peak_rss_mb-{command}.txt"
    console.rule(f"[bold]{command} in {settings.data_dir}")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", MEASURED, command, payload, str(peak)], cwd=ROOT, check=True)
    seconds = time.perf_counter() - began
    return {"wall_s": round(seconds, 1), "peak_rss_mb": round(float(peak.read_text()), 1)}


def run(
    shop: Shop = "online_retail", reference: Literal["full", "base"] = "full", source: Path | None = None
) -> dict[str, Any] | None:
    """Measure the update against the full run; None (after a message) when the shop's file is absent."""
    base = Settings()
    source = source or SHARED_ONLINE_RETAIL
    if shop == "online_retail" and not source.exists():
        console.print(f"[yellow]update bench skipped: the Online Retail file is not at {source}")
        return None
    root = ROOT / "data" / "bench" / "update" / shop
    shutil.rmtree(root, ignore_errors=True)  # both workspaces start from their raw files
    spaces = workspaces(base, shop, root)
    load_before = os.getloadavg()
    data = cut(shop, source, spaces)
    figures: dict[str, dict[str, float]] = {}
    if reference == "full":
        figures["full"] = measured("score", spaces["full"])
    figures["base"] = measured("score", spaces["update"])
    data["released"] = [p.name for p in arrivals.release_next_day(spaces["update"].resolved_raw_path)]
    figures["update"] = measured("update", spaces["update"])
    against = figures[reference]
    ratio = {
        "wall": round(figures["update"]["wall_s"] / against["wall_s"], 4),
        "peak_rss": round(figures["update"]["peak_rss_mb"] / against["peak_rss_mb"], 4),
    }
    report = {
        "shop": shop,
        "data": data,
        "reference": reference,
        "reference_is": "make score of every day"
        if reference == "full"
        else "make score of every day but the last (the update's base run)",
        "figures": figures,
        "ratio_update_to_reference": ratio,
        "target": {"ratio": TARGET_RATIO, "met": ratio["wall"] <= TARGET_RATIO},
        "workspaces": {name: str(s.data_dir) for name, s in spaces.items()},
        "machine": machine(load_before),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    show(report)
    return report


def show(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"make update against make score ({report['shop']})")
    for column in ("run", "wall s", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, figure in report["figures"].items():
        table.add_row(name, f"{figure['wall_s']:,.1f}", f"{figure['peak_rss_mb']:,.0f}")
    console.print(table)
    ratio, target = report["ratio_update_to_reference"], report["target"]
    verdict = "met" if target["met"] else "NOT met"
    console.print(
        f"update / {report['reference']} ({report['reference_is']}): wall {ratio['wall']:.1%}, peak memory "
        f"{ratio['peak_rss']:.1%}; target wall <= {target['ratio']:.0%}: {verdict}. Report: {REPORT}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scoring.bench.update", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--shop", choices=["online_retail", "demo"], default="online_retail")
    parser.add_argument(
        "--reference",
        choices=["full", "base"],
        default="full",
        help="full: measure make score of every day too; base: compare with the base run instead",
    )
    parser.add_argument("--source", type=Path, help="the Online Retail file (default: ../shared's)")
    args = parser.parse_args(argv)
    run(args.shop, args.reference, args.source)


if __name__ == "__main__":
    main()
