"""A reminder that sleeps seven days, then sends: durable timers and time skipping."""
