"""Entry point of the `ratline` / `kubectl-ratline` command.

Each sub-command lives in its own module exposing `register(subparsers)`;
they are imported lazily so `ratline --help` stays fast and a missing
optional piece names itself instead of breaking every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add sub-commands; each defines `register(subparsers) -> None`
# and sets `func` (argparse.Namespace -> int) on the parsers it adds.
COMMAND_MODULES = (
    "ratline.cli.run_local",  # ratline run module:attr --input JSON
    "ratline.cli.operator_cmd",  # ratline operator
    "ratline.cli.runs",  # history, describe, signal, cancel, retry
    "ratline.cli.schedules",  # schedule trigger NAME
    "ratline.cli.list_runs",  # list (from the store, CR or not)
    "ratline.ui.command",  # ratline ui (the web UI)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ratline", description="Durable Python workflows on Kubernetes."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
