"""Fan-out over a batch of documents; partial failures are reported, not fatal."""
