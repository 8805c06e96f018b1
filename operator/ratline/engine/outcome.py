"""What one activation of a run ended with, as the worker and tests see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ratline.sdk.context import StepInfo
from ratline.store.base import RunStatus


class SimulatedCrash(BaseException):
    """The testing runner's `simulate_crash_after` / `_during`: the process "dies"."""


@dataclass
class Activation:
    """Why the worker stopped: finished, or waiting until `wake_at` / for a promise."""

    status: RunStatus
    result: Any = None
    error: dict[str, Any] | None = None
    wake_at: datetime | None = None
    waiting_for: list[str] = field(default_factory=list)
    steps: list[StepInfo] = field(default_factory=list)
    crashed: bool = False

    def describe(self) -> str:
        if self.crashed:
            return "crashed (simulated)"
        if self.status.value == "suspended":
            parts = []
            if self.waiting_for:
                parts.append("for " + ", ".join(self.waiting_for))
            if self.wake_at is not None:
                parts.append(f"until {self.wake_at.isoformat()}")
            return "waiting " + " ".join(parts or ["for a signal"])
        if self.error:
            return f"{self.status.value}: {self.error.get('type')}: {self.error.get('message')}"
        return self.status.value
