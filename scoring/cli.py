"""`aisle` command line: the Makefile's targets call these."""

from __future__ import annotations

import argparse
import shlex

from scoring.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("score", help="the whole nightly job (make score)")
    commands.add_parser("generate", help="write the demo shop's raw files")
    commands.add_parser("dbt", help="dbt build with this workspace's environment")
    commands.add_parser("features", help="dbt build, feast apply and materialize")
    commands.add_parser("env", help="print the environment for running dbt/feast by hand (eval it)")
    commands.add_parser("serve", help="Feast's HTTP feature server on AISLE_FEAST_HOST:AISLE_FEAST_PORT")
    args = parser.parse_args(argv)
    settings = Settings()

    if args.command == "score":
        from scoring.pipeline import run

        run(settings)
    elif args.command == "generate":
        from scoring.pipeline import prepare_raw

        print(prepare_raw(settings))
    elif args.command == "dbt":
        from scoring.pipeline import prepare_raw
        from scoring.warehouse import dbt

        prepare_raw(settings)
        dbt(settings, "build")
    elif args.command == "features":
        from scoring.pipeline import build_features, prepare_raw

        prepare_raw(settings)
        build_features(settings)
    elif args.command == "serve":
        from scoring.serving import exec_server

        exec_server(settings)
    elif args.command == "env":
        for key, value in settings.environ().items():
            print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
