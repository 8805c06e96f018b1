"""`python -m ratline.controller`: run the operator (same flags as `ratline operator`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from ratline.controller.config import add_arguments, settings_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ratline.controller",
        description="The Ratline operator: WorkflowRuns -> worker pods, history -> status.",
    )
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Shared by both entry points: validate settings, configure logging, run."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"ratline operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from ratline.controller.app import run

    asyncio.run(run(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
