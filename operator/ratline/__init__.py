"""Ratline: durable, event-sourced Python workflows run by a Kubernetes operator.

Workflow authors import everything they need from here; the names are
re-exported from `ratline.sdk` (the list is pinned by a test).
"""
