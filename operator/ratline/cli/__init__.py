"""The `ratline` command (also `kubectl ratline`)."""
