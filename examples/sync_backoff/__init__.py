"""Batched sync of a rate-limited API: backoff retries, a fatal credential error."""
