"""Tiny workflows only the e2e tests run, as worker processes under the process kubelet.

Each side effect appends one JSON line to the file named by `RATLINE_E2E_LOG`
(set through the Workflow's podTemplate.env), so a test can count what really
ran across worker processes, replacements and operator restarts.
"""
