"""Retry policies for steps: how many attempts and how long to back off."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from ratline.sdk.durations import parse_duration
from ratline.sdk.errors import NonRetryableError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff; attempts and waits are recorded, so they survive a crash."""

    max_attempts: int = 3
    initial_interval: timedelta | str | float = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    max_interval: timedelta | str | float = timedelta(minutes=5)
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.backoff_coefficient < 1:
            raise ValueError("RetryPolicy.backoff_coefficient must be >= 1")
        object.__setattr__(self, "initial_interval", parse_duration(self.initial_interval))
        object.__setattr__(self, "max_interval", parse_duration(self.max_interval))

    def delay(self, attempt: int) -> timedelta:
        """Backoff before attempt `attempt + 1`, given that `attempt` just failed."""
        first = parse_duration(self.initial_interval).total_seconds()
        cap = parse_duration(self.max_interval).total_seconds()
        return timedelta(seconds=min(cap, first * self.backoff_coefficient ** (attempt - 1)))

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        if isinstance(error, (NonRetryableError, *self.non_retryable)):
            return False
        return attempt < self.max_attempts


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()
