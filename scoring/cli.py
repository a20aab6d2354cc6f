"""`aisle` command line: the Makefile's targets call these.

A known failure (scoring.errors.AisleError: a broken raw contract, a failed dbt build, a run already in
progress, a failed publishing check) prints one message and exits 1; anything else keeps its traceback.
Every command that writes to the workspace holds its lock (scoring/lock.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from rich.console import Console

from scoring.errors import AisleError
from scoring.settings import Settings


def _run(command: str, settings: Settings) -> None:
    from scoring.lock import workspace_lock

    if command == "serve":
        from scoring.serving import exec_server

        exec_server(settings)
    elif command == "env":
        for key, value in settings.environ().items():
            print(f"export {key}={shlex.quote(value)}")
    elif command == "score":
        from scoring.pipeline import run

        run(settings)
    else:
        from scoring.pipeline import build_features, prepare_raw

        with workspace_lock(settings.lock_path, f"aisle {command}"):
            raw = prepare_raw(settings)
            if command == "generate":
                print(raw)
            else:
                build_features(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("score", help="the whole nightly job (make score)")
    commands.add_parser("generate", help="write the demo shop's raw files")
    commands.add_parser(
        "features", help="dbt build, feast apply and materialize in a new build, then swap it in"
    )
    commands.add_parser("env", help="print the environment for running dbt/feast by hand (eval it)")
    commands.add_parser("serve", help="Feast's HTTP feature server on AISLE_FEAST_HOST:AISLE_FEAST_PORT")
    args = parser.parse_args(argv)
    try:
        _run(args.command, Settings())
    except AisleError as error:
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"[bold red]aisle {args.command}:[/] {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
