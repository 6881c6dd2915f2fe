"""Which failed swift run is the upstream exit-time abort after finishing (the demo accepts it, the tests rerun it)."""

from __future__ import annotations

from moon_swift.integrations.swift.exit_abort import EXIT_TIME_ABORT, SWIFT_RUN_FINISHED, aborted_after_finishing

#: the tail of the CI run that aborted (rank 1 of 2, ZeRO-3, after saving checkpoint-4), shortened
FINISHED_THEN_ABORTED = f"""[INFO:swift] Saving model checkpoint to out/checkpoint-4
[INFO:swift] last_model_checkpoint: out/checkpoint-4
[INFO:swift] {SWIFT_RUN_FINISHED}: 2026-12-04 10:09:09.869782
{EXIT_TIME_ABORT}
E1204 10:09:10.008000 api.py:1002] failed (exitcode: -6) local_rank: 1 (pid: 26676)
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
"""


def test_the_abort_after_a_finished_run_is_recognised():
    assert aborted_after_finishing(FINISHED_THEN_ABORTED)


def test_a_failure_before_the_end_is_not_rerun():
    crashed = "Traceback (most recent call last):\nValueError: bad row\n" + FINISHED_THEN_ABORTED
    assert not aborted_after_finishing(crashed)
    assert not aborted_after_finishing(f"Train: 2/4\n{EXIT_TIME_ABORT}\n")  # aborted before finishing
    assert not aborted_after_finishing(FINISHED_THEN_ABORTED.replace(EXIT_TIME_ABORT, "Killed"))
