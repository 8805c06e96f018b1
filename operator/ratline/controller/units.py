"""Timestamps as Kubernetes spells them (RFC 3339 with a `Z`, second precision).

Pure helpers shared by the projection, the status writer, the reconciler and
the CLI's tables. Durations (`30s`, `1h30m`) are the SDK's `parse_duration`,
so a Workflow default and `ctx.sleep` accept exactly the same spellings.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a `Z`, second precision: what Kubernetes' date-time expects."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: object) -> datetime | None:
    """Inverse of `iso`, lenient: None for anything that is not a timestamp."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
