"""Judging SPDK's doorbell_aers by the lines it prints (as test/nvme/doorbell_aers prints them)."""

from __future__ import annotations

import pytest

from orchestrator.errors import DeadlineError
from orchestrator.guest.ssh import Result
from orchestrator.spdk import DOORBELL_CASES, DoorbellAers

PASSING = """Executing: test_write_invalid_db
Waiting for AER completion...
Asynchronous Event received.
Error Informaton Log Page received.
Success: test_write_invalid_db

Executing: test_invalid_db_write_overflow_sq
Waiting for AER completion...
Asynchronous Event received.
Error Informaton Log Page received.
Success: test_invalid_db_write_overflow_sq

Executing: test_invalid_db_write_overflow_cq
Waiting for AER completion...
Asynchronous Event received.
Error Informaton Log Page received.
Success: test_invalid_db_write_overflow_cq
"""


def judged(text: str, rc: int = 0, hung: str | None = None) -> DoorbellAers:
    run = DoorbellAers(hung=hung, result=Result("doorbell_aers", rc, text, "", 1.0))
    for line in text.splitlines():
        run.feed(line)
    return run


def test_three_successes_pass() -> None:
    run = judged(PASSING)
    assert run.verdicts == dict.fromkeys(DOORBELL_CASES, "Success") and run.failures() == []
    run.check(10, "")


def test_a_failure_line_fails_although_the_app_exits_0() -> None:
    text = PASSING.replace("Success: test_invalid_db_write_overflow_sq", "Failure: test_invalid_db_write_overflow_sq")
    with pytest.raises(AssertionError, match=r"test_invalid_db_write_overflow_sq \(SQ 1 tail .*\): Failure$"):
        judged(text, rc=0).check(10, "")


def test_missing_verdicts_and_exit_status_are_named() -> None:
    text = PASSING.split("Executing: test_invalid_db_write_overflow_cq")[0]  # died during the last case
    failures = judged(text, rc=1).failures()
    assert failures == ["test_invalid_db_write_overflow_cq (CQ 1 head past its 32 entries: Error AER info 0x1): "
                        "no verdict printed", "exit status 1"]


def test_an_aer_that_never_came_is_a_timeout_with_the_reason() -> None:
    text = "Executing: test_write_invalid_db\nWaiting for AER completion...\nFailure: test_write_invalid_db\n"
    with pytest.raises(DeadlineError, match="no Error AER for test_write_invalid_db within 20 s, interrupted; "
                                            "no AER outstanding"):
        judged(text, hung="test_write_invalid_db").check(20, "no AER outstanding")
