"""Replay: turns a run's history plus its workflow code into the next commands.

`activate()` is the one entry point the worker and the testing runner use.
"""

from ratline.engine.activate import activate, resolve_entrypoint
from ratline.engine.execution import Execution
from ratline.engine.outcome import Activation, SimulatedCrash
from ratline.engine.parts import ExecutionOptions

__all__ = [
    "Activation",
    "Execution",
    "ExecutionOptions",
    "SimulatedCrash",
    "activate",
    "resolve_entrypoint",
]
