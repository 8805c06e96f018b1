"""Retry policies for steps: how many attempts and how long to back off."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from ratline.sdk.durations import parse_duration
from ratline.sdk.errors import NonRetryableError

DEFAULT_MAX_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff; attempts and waits are recorded, so they survive a crash.

    `max_interval` defaults to 5 minutes, or to `initial_interval` when that is
    longer; a policy that contradicts itself is refused when it is defined.
    """

    max_attempts: int = 3
    initial_interval: timedelta | str | float = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    max_interval: timedelta | str | float | None = None
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.backoff_coefficient < 1:
            raise ValueError(
                f"RetryPolicy.backoff_coefficient must be >= 1, got {self.backoff_coefficient!r}"
            )
        initial = _interval("initial_interval", self.initial_interval)
        if self.max_interval is None:
            cap = max(initial, DEFAULT_MAX_INTERVAL)
        else:
            cap = _interval("max_interval", self.max_interval)
            if initial > cap:
                raise ValueError(
                    f"RetryPolicy.initial_interval ({initial}) is longer than "
                    f"max_interval ({cap}): the first wait could never be honoured"
                )
        for kind in self.non_retryable:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ValueError(f"RetryPolicy.non_retryable holds {kind!r}, not an exception type")
        object.__setattr__(self, "initial_interval", initial)
        object.__setattr__(self, "max_interval", cap)

    def delay(self, attempt: int) -> timedelta:
        """Backoff before attempt `attempt + 1`, given that `attempt` just failed."""
        first = parse_duration(self.initial_interval).total_seconds()
        cap = parse_duration(self.max_interval or DEFAULT_MAX_INTERVAL).total_seconds()
        return timedelta(seconds=min(cap, first * self.backoff_coefficient ** (attempt - 1)))

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        if isinstance(error, (NonRetryableError, *self.non_retryable)):
            return False
        return attempt < self.max_attempts


def _interval(name: str, value: timedelta | str | float) -> timedelta:
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"RetryPolicy.{name}: {exc}") from None
    if parsed < timedelta(0):
        raise ValueError(f"RetryPolicy.{name} must not be negative, got {value!r}")
    return parsed


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_RETRY = RetryPolicy()
