"""The kopf operator: WorkflowRuns -> worker pods, store history -> status.

`python -m ratline.controller` (or `ratline operator`) starts it. It uses the
store only through `ratline.store.base.Store`, never imports workflow code and
never replays: workers do that; the controller starts them, watches them end,
delivers what users patch into a run, and projects history into `status`.
"""
