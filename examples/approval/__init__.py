"""Approval with a two-day deadline, escalation and a final decision."""
