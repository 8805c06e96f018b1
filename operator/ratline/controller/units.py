"""Durations and timestamps as the CRDs spell them (`30s`, `1h30m`, RFC 3339).

Pure helpers shared by the projection, the pod builder and the reconciler.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`"1h30m"` -> 5400.0 seconds; ValueError names the bad text (the CRD pattern
    normally rejects it first, but Workflow defaults can predate a pattern change)."""
    text = text.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a duration like 30s, 5m, 2h or 7d: {text!r}")
    return total


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
