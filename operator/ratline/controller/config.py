"""The operator's settings: flags, each with an environment fallback.

Both `python -m ratline.controller` and `ratline operator` call
`add_arguments` then `settings_from_args`, so the two entry points cannot drift.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from ratline.sdk.durations import parse_duration


@dataclass(frozen=True)
class Settings:
    """Everything the operator needs to know before it starts."""

    dsn: str
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    worker_dsn_secret: str = "ratline-db"
    worker_dsn_key: str = "dsn"
    metrics_port: int = 8080  # 0 disables the metrics endpoint
    metrics_host: str = "0.0.0.0"
    status_interval: float = 1.0  # at most one status patch per run per interval
    idle_threshold: float = 2.0  # passed to workers as RATLINE_IDLE_THRESHOLD
    peering: str | None = None  # kopf peering object name; None: standalone
    max_retries: int = 10  # worker crashes tolerated before RetriesExhausted
    backoff_initial: float = 1.0  # seconds before the first replacement pod
    backoff_max: float = 300.0
    wake_poll: float = 1.0  # how often due timers are looked up in the store
    resync_interval: float = 60.0  # every non-final run is reconciled this often; 0: never
    workflow_recheck: float = 30.0  # re-look for a missing Workflow this often
    liveness: str | None = None  # e.g. http://0.0.0.0:8081/healthz
    worker_command: tuple[str, ...] = ("python", "-m", "ratline.worker")
    keep_finished_pods: bool = True  # keep a finished run's last pod for `kubectl logs`
    retention: float | None = None  # seconds finished histories are kept; None: forever
    retention_batch: int = 500  # runs deleted per retention transaction
    retention_interval: float = 300.0  # seconds between two retention sweeps

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the operator; every one falls back to a RATLINE_* variable."""
    add = parser.add_argument
    add("--dsn", default=_env("RATLINE_DSN"), help="the operator's store DSN (RATLINE_DSN)")
    add(
        "--namespace",
        action="append",
        dest="namespaces",
        default=None,
        help="watch only this namespace (repeatable; RATLINE_NAMESPACES, comma-separated); "
        "default: all namespaces",
    )
    add("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    add(
        "--worker-dsn-secret",
        default=_env("RATLINE_WORKER_DSN_SECRET", "ratline-db"),
        help="Secret (in the run's namespace) holding the workers' DSN under key `dsn`",
    )
    add("--worker-dsn-key", default=_env("RATLINE_WORKER_DSN_KEY", "dsn"))
    add(
        "--metrics-port",
        type=int,
        default=int(_env("RATLINE_METRICS_PORT", "8080") or 8080),
        help="Prometheus endpoint port; 0 disables it",
    )
    add("--metrics-host", default=_env("RATLINE_METRICS_HOST", "0.0.0.0"))
    add(
        "--status-interval",
        type=float,
        default=float(_env("RATLINE_STATUS_INTERVAL", "1.0") or 1.0),
        help="seconds between two status patches of one run (bursts are coalesced)",
    )
    add(
        "--idle-threshold",
        type=float,
        default=float(_env("RATLINE_IDLE_THRESHOLD", "2.0") or 2.0),
        help="passed to workers: waits longer than this end the worker pod",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--peering",
        default=_env("RATLINE_PEERING"),
        help="kopf peering object name: replicas elect one active operator",
    )
    mode.add_argument(
        "--standalone", action="store_true", help="no peering: run exactly one replica"
    )
    add(
        "--max-retries",
        type=int,
        default=int(_env("RATLINE_MAX_RETRIES", "10") or 10),
        help="worker crashes tolerated per run before it fails with RetriesExhausted",
    )
    add("--backoff-initial", type=float, default=float(_env("RATLINE_BACKOFF_INITIAL", "1") or 1))
    add("--backoff-max", type=float, default=float(_env("RATLINE_BACKOFF_MAX", "300") or 300))
    add("--wake-poll", type=float, default=float(_env("RATLINE_WAKE_POLL", "1") or 1))
    add(
        "--resync-interval",
        type=float,
        default=float(_env("RATLINE_RESYNC_INTERVAL", "60") or 60),
        help="seconds between two reconciles of every run not final yet, the safety net "
        "for missed events (RATLINE_RESYNC_INTERVAL; 0 disables)",
    )
    add("--liveness", default=_env("RATLINE_LIVENESS"), help="e.g. http://0.0.0.0:8081/healthz")
    add(
        "--delete-finished-pods",
        action="store_true",
        help="also delete the last worker pod of a finished run (default: keep it for logs)",
    )
    _add_retention(add)


def _add_retention(add: Any) -> None:
    add(
        "--retention",
        default=_env("RATLINE_RETENTION"),
        help="keep finished runs' histories in the store this long (e.g. 30d), then prune "
        "them (RATLINE_RETENTION); default: forever",
    )
    add(
        "--retention-batch",
        type=int,
        default=int(_env("RATLINE_RETENTION_BATCH", "500") or 500),
        help="runs deleted per retention transaction",
    )
    add(
        "--retention-interval",
        type=float,
        default=float(_env("RATLINE_RETENTION_INTERVAL", "300") or 300),
        help="seconds between two retention sweeps",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate the parsed flags; ValueError says which one is wrong."""
    if not args.dsn:
        raise ValueError("a store DSN is required: --dsn or RATLINE_DSN")
    namespaces: list[str] = list(args.namespaces or [])
    if not namespaces and not args.all_namespaces:
        env_ns = _env("RATLINE_NAMESPACES")
        if env_ns:
            namespaces = [ns.strip() for ns in env_ns.split(",") if ns.strip()]
    if args.all_namespaces:
        namespaces = []
    if args.status_interval <= 0:
        raise ValueError("--status-interval must be > 0")
    if args.idle_threshold < 0:
        raise ValueError("--idle-threshold must be >= 0")
    if args.resync_interval < 0:
        raise ValueError("--resync-interval must be >= 0 (0 disables the resync)")
    if args.max_retries < 0:
        raise ValueError("--max-retries must be >= 0")
    retention = None if not args.retention else parse_duration(args.retention).total_seconds()
    if retention is not None and retention <= 0:
        raise ValueError("--retention must be a positive duration like 30d")
    if args.retention_batch < 1:
        raise ValueError("--retention-batch must be >= 1")
    if args.retention_interval <= 0:
        raise ValueError("--retention-interval must be > 0")
    if not 0 <= args.metrics_port <= 65535:
        raise ValueError("--metrics-port must be a port number (0 disables)")
    return Settings(
        dsn=args.dsn,
        namespaces=tuple(namespaces),
        worker_dsn_secret=args.worker_dsn_secret,
        worker_dsn_key=args.worker_dsn_key,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        status_interval=args.status_interval,
        idle_threshold=args.idle_threshold,
        peering=None if args.standalone else args.peering,
        max_retries=args.max_retries,
        backoff_initial=max(0.0, args.backoff_initial),
        backoff_max=max(args.backoff_initial, args.backoff_max),
        wake_poll=max(0.05, args.wake_poll),
        resync_interval=args.resync_interval,
        liveness=args.liveness,
        keep_finished_pods=not args.delete_finished_pods,
        retention=retention,
        retention_batch=args.retention_batch,
        retention_interval=args.retention_interval,
    )
