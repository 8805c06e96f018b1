"""The root of Ratline's exceptions, shared by every subpackage.

Each error says how a caller should react: retry later (`TemporaryError`),
give up (`PermanentError`), or stop touching the run (`FencedError`).
"""

from __future__ import annotations


class RatlineError(Exception):
    """Root of every error Ratline raises on purpose."""


class PermanentError(RatlineError):
    """Retrying will not help: the input, the code or the configuration is wrong."""


class TemporaryError(RatlineError):
    """Retrying later may help; `delay` is a hint in seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message, delay)
        self.message = message
        self.delay = delay

    def __str__(self) -> str:
        return self.message


class StoreError(RatlineError):
    """The event store could not do what was asked."""


class FencedError(StoreError):
    """A newer worker holds the run's lease: this worker must stop writing."""


class LeaseHeldError(StoreError):
    """Another live worker holds the run's lease."""


class RunNotFoundError(StoreError):
    """No run with that id exists in the store."""
