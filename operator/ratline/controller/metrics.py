"""Prometheus metrics of the operator, on a registry of its own.

A private `CollectorRegistry` (not the process-wide default) lets tests build
several operators in one process; `serve` exposes it on --metrics-port.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter

from ratline.controller.projection import PHASES

log = logging.getLogger(__name__)
ALL_PHASES = sorted(set(PHASES.values()))


class Metrics:
    """The operator's four signals: phases, reconcile latency, pods, signal latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Gauge(
            "ratline_runs",
            "WorkflowRuns known to this operator, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "ratline_reconcile_seconds",
            "Time to reconcile one WorkflowRun (or handle one worker pod event).",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.pods_started = PromCounter(
            "ratline_worker_pods_started",
            "Worker pods created.",
            registry=self.registry,
        )
        self.worker_exits = PromCounter(
            "ratline_worker_exits",
            "Worker pods that ended, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.signal_to_resume = Histogram(
            "ratline_signal_to_resume_seconds",
            "From delivering a signal to the run recording the promise resolved.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self._phases: dict[str, str] = {}
        self._delivered: dict[tuple[str, str], float] = {}
        for phase in ALL_PHASES:
            self.runs.labels(phase=phase).set(0)

    def phase_changed(self, uid: str, phase: str | None) -> None:
        """Keep the by-phase gauge exact: one entry per run, None forgets it."""
        if phase is None:
            self._phases.pop(uid, None)
        elif self._phases.get(uid) == phase:
            return
        else:
            self._phases[uid] = phase
        counts = Counter(self._phases.values())
        for name in ALL_PHASES:
            self.runs.labels(phase=name).set(counts.get(name, 0))

    def signal_delivered(self, uid: str, name: str) -> None:
        self._delivered[(uid, name)] = time.monotonic()
        if len(self._delivered) > 10_000:  # never resolved (e.g. the run ended): drop oldest
            oldest = min(self._delivered, key=self._delivered.__getitem__)
            del self._delivered[oldest]

    def signal_resumed(self, uid: str, name: str) -> None:
        started = self._delivered.pop((uid, name), None)
        if started is not None:
            self.signal_to_resume.observe(time.monotonic() - started)


def serve(metrics: Metrics, host: str, port: int) -> Any:
    """Start the /metrics HTTP endpoint in a thread; returns the server (or None if off)."""
    if port <= 0:
        return None
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
