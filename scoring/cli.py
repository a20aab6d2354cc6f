"""`aisle`: the one command line; the Makefile's targets call its subcommands.

A known failure (scoring.errors.AisleError: a broken raw contract, a failed dbt build, a run already in
progress, a failed publishing check, the publish gate's refusal) prints one message and exits 1;
anything else keeps its traceback. A run whose lists were published exits 0, including one where the
gate published a simple peer's lists in place of a losing ranker (its summary says so).
Every command that writes to the workspace holds its lock (scoring/pipeline/lock.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rich.console import Console

from scoring.errors import AisleError
from scoring.settings import Settings

# Subcommands that hand their own options to the job's entry point.
PASSED_ON = {"evaluate", "evaluate-search", "report", "bench"}


def _run(args: argparse.Namespace, rest: list[str], settings: Settings) -> None:
    from scoring.pipeline.lock import workspace_lock

    command = args.command
    if command == "serve":
        from scoring.serving.server import exec_server

        exec_server(settings)
    elif command == "env":
        for key, value in settings.environ().items():
            print(f"export {key}={shlex.quote(value)}")
    elif command == "score":
        from scoring.pipeline.job import run

        run(settings.model_copy(update={"force_publish": True}) if args.force_publish else settings)
    elif command == "update":
        from scoring.pipeline.update import run

        run(settings)
    elif command == "stage":
        from scoring.pipeline.stages import rerun

        with workspace_lock(settings.lock_path, f"aisle stage {args.name}"):
            print(rerun(args.run_dir, args.name))
    elif command == "evaluate":
        from scoring.evaluation.cli import main

        main(rest)
    elif command == "evaluate-search":
        from scoring.evaluation.search import main

        main(rest)
    elif command == "report":
        from scoring.reports.cli import main

        main(rest)
    elif command == "bench":
        from scoring.bench.pipeline import main

        main(rest)
    elif command == "demo":
        from scoring.ingest.prepare import next_day

        with workspace_lock(settings.lock_path, f"aisle demo {args.action}"):
            for path in next_day(settings):
                print(f"released {path}")
    else:
        from scoring.ingest.prepare import prepare_raw
        from scoring.pipeline.build import build_features

        with workspace_lock(settings.lock_path, f"aisle {command}"):
            raw = prepare_raw(settings)
            if command == "generate":
                print(raw)
            else:
                build_features(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="the whole nightly job (make score)")
    score.add_argument(
        "--force-publish",
        action="store_true",
        help="publish even if the publish gate refuses the run (AISLE_FORCE_PUBLISH=1); the manifest says so",
    )
    commands.add_parser(
        "update",
        help="score what arrived since the last publication with the promoted run (make update)",
    )
    commands.add_parser("generate", help="write the demo shop's raw files")
    demo = commands.add_parser("demo", help="the demo shop's held-back days (AISLE_DEMO_PENDING_DAYS)")
    demo.add_argument(
        "action",
        choices=["next-day"],
        help="next-day: release the earliest held-back day into the raw folder",
    )
    commands.add_parser(
        "features", help="dbt build, feast apply and materialize in a new build, then swap it in"
    )
    stage = commands.add_parser("stage", help="rerun one scoring stage of a run folder, with its settings")
    stage.add_argument("name", help="a stage of scoring/pipeline/stages.py, e.g. rank")
    stage.add_argument("run_dir", type=Path)
    commands.add_parser("evaluate", help="offline evaluation (make evaluate)", add_help=False)
    commands.add_parser(
        "evaluate-search", help="search evaluation on Home Depot (make evaluate-search)", add_help=False
    )
    commands.add_parser("report", help="the data-quality and runs pages (make report)", add_help=False)
    commands.add_parser("bench", help="speed and memory benchmarks (make bench)", add_help=False)
    commands.add_parser("env", help="print the environment for running dbt/feast by hand (eval it)")
    commands.add_parser("serve", help="Feast's HTTP feature server on AISLE_FEAST_HOST:AISLE_FEAST_PORT")
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in PASSED_ON:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        _run(args, rest, Settings())
    except AisleError as error:
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"[bold red]aisle {args.command}:[/] {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
