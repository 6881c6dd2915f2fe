"""Recognising the one failure of a `swift sft` run that comes after it finished: an abort at interpreter exit.

With torch 2.13 and gloo on CPU a rank sometimes aborts while the interpreter shuts down, after swift printed
its last line and every checkpoint is written: a non-Python (gloo) thread touches the interpreter during
finalization and the C++ runtime terminates the process. The loader's atexit ``destroy_process_group`` makes it
rarer, not impossible (cf. pytorch/pytorch#179291, abandoned upstream). Callers that launch swift (the demo, the
tests) tell this from a real failure here instead of failing a complete run.
"""

from __future__ import annotations

#: what swift logs when a run has finished (trained, saved): its last line of its own
SWIFT_RUN_FINISHED = "End time of running main"
#: what the C++ runtime prints as it aborts the rank
EXIT_TIME_ABORT = "terminate called without an active exception"


def aborted_after_finishing(output: str) -> bool:
    """True when a failed run's only failure is the exit-time abort: no traceback before swift's last line,
    the abort after it."""
    end = output.rfind(SWIFT_RUN_FINISHED)
    return end >= 0 and EXIT_TIME_ABORT in output[end:] and "Traceback (most recent call last)" not in output[:end]
