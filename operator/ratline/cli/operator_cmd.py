"""`ratline operator`: run the Kubernetes operator (same as `python -m ratline.controller`)."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from ratline.controller.__main__ import run_from_args

    return run_from_args(args)


def register(subparsers: Any) -> None:
    """Add the `operator` sub-command; kopf is imported only when it runs."""
    from ratline.controller.config import add_arguments

    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator",
        description="The Ratline operator: WorkflowRuns -> worker pods, history -> status.",
    )
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)
