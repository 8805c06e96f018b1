"""Settings, exit codes and the top-level flow of one worker process.

The operator reads the exit code to decide what to do next, so every way a
worker can stop maps to one documented code (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ratline.engine import ExecutionOptions, activate, resolve_entrypoint
from ratline.engine.activate import EntrypointError
from ratline.errors import FencedError, LeaseHeldError, RunNotFoundError, StoreError
from ratline.protocol import (
    ENV_ATTEMPT,
    ENV_DEFAULT_RETRY,
    ENV_DSN,
    ENV_ENTRYPOINT,
    ENV_IDLE_THRESHOLD,
    ENV_RUN_ID,
    ENV_WORKER_ID,
    ExitCode,
)
from ratline.sdk.retry import RetryPolicy
from ratline.store import (
    DEFAULT_STORE_RETRY_S,
    STORE_RETRY_ENV,
    RunStatus,
    RunUpdate,
    Store,
    open_store,
)

log = logging.getLogger("ratline.worker")


@dataclass(frozen=True)
class WorkerSettings:
    run_id: str
    dsn: str
    entrypoint: str
    idle_threshold_s: float
    worker_id: str
    attempt: int
    default_retry: RetryPolicy | None = None  # Workflow.spec.defaults.retry
    store_retry_s: float = DEFAULT_STORE_RETRY_S  # how long a store call rides out an outage


def parse_settings(argv: Sequence[str] | None = None) -> WorkerSettings:
    """Flags override env; a missing setting exits 2 naming the flag and the variable."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m ratline.worker")
    parser.add_argument("--run-id", default=env.get(ENV_RUN_ID, ""))
    parser.add_argument("--dsn", default=env.get(ENV_DSN, ""))
    parser.add_argument("--entrypoint", default=env.get(ENV_ENTRYPOINT, ""))
    parser.add_argument(
        "--idle-threshold", type=float, default=float(env.get(ENV_IDLE_THRESHOLD, "2"))
    )
    default_id = env.get(ENV_WORKER_ID) or env.get("HOSTNAME") or socket.gethostname()
    parser.add_argument("--worker-id", default=f"{default_id}:{os.getpid()}")
    parser.add_argument("--attempt", type=int, default=int(env.get(ENV_ATTEMPT, "1")))
    add_store_retry_flag(parser)
    args = parser.parse_args(argv)
    for flag, var in (("run_id", ENV_RUN_ID), ("dsn", ENV_DSN)):
        if not getattr(args, flag):
            parser.error(f"--{flag.replace('_', '-')} (or ${var}) is required")
    return WorkerSettings(
        run_id=args.run_id,
        dsn=args.dsn,
        entrypoint=args.entrypoint,
        idle_threshold_s=args.idle_threshold,
        worker_id=args.worker_id,
        attempt=args.attempt,
        default_retry=_default_retry(parser, env.get(ENV_DEFAULT_RETRY, "")),
        store_retry_s=args.store_retry,
    )


def add_store_retry_flag(parser: argparse.ArgumentParser) -> None:
    """`--store-retry SECONDS` (env `RATLINE_STORE_RETRY`): the store's outage budget.

    Shared by the worker and `ratline run`, so both read the same setting the same way."""
    raw = os.environ.get(STORE_RETRY_ENV, "")
    try:
        default = float(raw) if raw else DEFAULT_STORE_RETRY_S
    except ValueError:
        parser.error(f"${STORE_RETRY_ENV} must be a number of seconds, not {raw!r}")
    parser.add_argument(
        "--store-retry",
        type=_seconds,
        default=default,
        metavar="SECONDS",
        help=f"how long a lost Postgres is retried before giving up (${STORE_RETRY_ENV}, "
        f"default {DEFAULT_STORE_RETRY_S:g})",
    )


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, not {text}")
    return value


def _default_retry(parser: argparse.ArgumentParser, raw: str) -> RetryPolicy | None:
    """`RATLINE_DEFAULT_RETRY`: the Workflow's `spec.defaults.retry` as JSON."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return RetryPolicy(
            max_attempts=int(data.get("maxAttempts", 3)),
            initial_interval=data.get("initialInterval", "1s"),
            backoff_coefficient=float(data.get("backoffCoefficient", 2.0)),
            max_interval=data.get("maxInterval", "5m"),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        parser.error(f"$RATLINE_DEFAULT_RETRY is not a valid retry policy: {exc}")


async def run_worker(settings: WorkerSettings, store: Store | None = None) -> ExitCode:
    """Advance one run and say why it stopped; the exit code tells the operator."""
    own_store = store is None
    try:
        if store is None:
            store = await open_store(settings.dsn, retry_s=settings.store_retry_s)
    except StoreError as exc:
        log.error("cannot reach the store: %s", exc)
        return ExitCode.STORE_UNREACHABLE
    try:
        return await _advance(store, settings)
    finally:
        if own_store:
            await store.close()


async def _advance(store: Store, settings: WorkerSettings) -> ExitCode:
    run = await store.get_run(settings.run_id)
    if run is None:
        log.error("run %s does not exist in the store", settings.run_id)
        return ExitCode.USAGE
    try:
        spec = resolve_entrypoint(settings.entrypoint or run.entrypoint or run.workflow)
        if spec.retry is None and settings.default_retry is not None:
            spec = dataclasses.replace(spec, retry=settings.default_retry)
    except EntrypointError as exc:
        log.error("%s", exc)
        error = {"type": "EntrypointInvalid", "message": str(exc)}
        if not run.status.finished:
            await store.set_status(run.id, RunUpdate(status=RunStatus.FAILED, error=error))
        return ExitCode.ENTRYPOINT_INVALID
    options = ExecutionOptions(idle_threshold_s=settings.idle_threshold_s, attempt=settings.attempt)
    try:
        outcome = await activate(
            store, run.id, owner=settings.worker_id, spec=spec, options=options
        )
    except LeaseHeldError as exc:
        log.error("%s", exc)
        return ExitCode.LEASE_HELD
    except FencedError as exc:
        log.error("a newer worker took over run %s: %s", run.name, exc)
        return ExitCode.LEASE_HELD
    except RunNotFoundError as exc:
        log.error("%s", exc)
        return ExitCode.USAGE
    except StoreError as exc:
        log.error("the store failed while advancing run %s: %s", run.name, exc)
        return ExitCode.STORE_UNREACHABLE
    log.info("run %s stopped: %s", run.name, outcome.describe())
    if outcome.error and outcome.error.get("type") == "InputValidationError":
        return ExitCode.INPUT_INVALID
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("RATLINE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = parse_settings(argv)
    try:
        return int(asyncio.run(run_worker(settings)))
    except KeyboardInterrupt:
        return int(ExitCode.CRASH)
