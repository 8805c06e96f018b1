"""The worker pod's entrypoint: one process advances one run, then exits.

`python -m ratline.worker` (see docs/architecture.md for settings and exit codes).
"""

from ratline.protocol import ExitCode
from ratline.worker.main import WorkerSettings, main, run_worker

__all__ = ["ExitCode", "WorkerSettings", "main", "run_worker"]
