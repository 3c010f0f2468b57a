"""The outcome classifier, rule by rule: each row a case the engine meets."""

from __future__ import annotations

import pytest

from orchestrator.results import outcome


@pytest.mark.parametrize("passed, skipped, timed_out, crash, expected", [
    (True, False, False, None, "passed"),
    (False, False, False, None, "failed"),
    (False, True, False, None, "skipped"),
    (False, False, True, None, "timed out"),  # the deadline outranks the body's own failure
    (True, False, True, None, "timed out"),  # a body that caught its deadline and returned
    (False, False, True, "guest crashed", "guest crashed"),  # a crash outranks the deadline it caused
    (True, False, False, "qemu crashed", "qemu crashed"),  # a passing body whose QEMU died did not pass
])
def test_call(passed: bool, skipped: bool, timed_out: bool, crash: str | None, expected: str) -> None:
    assert outcome.call(passed, skipped, timed_out, crash) == expected


@pytest.mark.parametrize("fired, deadline_error, fatal, expected", [
    (True, False, False, True),
    (False, True, False, True),  # a wait of the test's own (DeadlineError)
    (True, True, True, False),  # a fatal crash explains the wait
    (False, False, False, False),
])
def test_timed_out(fired: bool, deadline_error: bool, fatal: bool, expected: bool) -> None:
    assert outcome.timed_out(fired, deadline_error, fatal) is expected


@pytest.mark.parametrize("phases, expected", [
    ([outcome.setup(False, False), "passed", outcome.teardown(False, "passed")], "passed"),
    ([outcome.setup(True, False)], "skipped"),
    ([outcome.setup(False, True)], "infrastructure error"),  # a fixture failed: the test-bed's fault
    ([outcome.setup(False, True, qemu_died=True)], "qemu crashed"),  # QEMU died under the fixture's call
    ([None, "passed", outcome.teardown(True, "passed", qemu_died=True)], "qemu crashed"),
    ([None, "failed", outcome.teardown(True, "failed")], "infrastructure error"),  # could not restore
    ([None, "qemu crashed", outcome.teardown(True, "qemu crashed")], "qemu crashed"),  # the crash's consequence
    ([None, "timed out", "passed"], "timed out"),  # the worst phase wins
    ([None], "infrastructure error"),  # interrupted before the body reported: incomplete
])
def test_a_test_ends_with_its_worst_phase(phases: list[str | None], expected: str) -> None:
    kind = None
    for k in phases:
        kind = outcome.worst(kind, k)
    assert outcome.final(kind) == expected


@pytest.mark.parametrize("qemu_died, lost, ended, expected", [
    (True, None, "passed", "QEMU died"),
    (False, "device_del nvme0: no DEVICE_DELETED within 3 s", "failed",
     "half-unplugged: device_del nvme0: no DEVICE_DELETED within 3 s"),
    (False, None, "timed out", "the test ended timed out: the machine's state is unknown"),
    (False, None, "infrastructure error", "the test ended infrastructure error: the machine's state is unknown"),
    (False, None, "failed", None),  # a failure of the app under test leaves the machine usable
    (False, None, "passed", None),
])
def test_which_machines_are_discarded(qemu_died: bool, lost: str | None, ended: str, expected: str | None) -> None:
    assert outcome.discard(qemu_died, lost, ended) == expected


def test_exit_codes() -> None:
    ok = {"a": {"outcome": "passed"}, "b": {"outcome": "skipped"}}
    assert outcome.exit_code(ok, 0) == 0
    assert outcome.exit_code({**ok, "c": {"outcome": "timed out"}}, 1) == 1
    assert outcome.exit_code({**ok, "c": {"outcome": "guest crashed"}}, 1) == 1
    assert outcome.exit_code({**ok, "c": {"outcome": "failed"}, "d": {"outcome": "infrastructure error"}}, 1) == 2
    assert outcome.exit_code({}, 5) == 2  # nothing ran: incomplete
    assert outcome.exit_code(ok, 2) == 2  # interrupted


@pytest.mark.parametrize("final, known_as, expected", [
    ("guest crashed", "guest crashed", "known failure"),
    ("infrastructure error", "guest crashed", "infrastructure error"),  # teardown broke after the known crash
    ("failed", None, "failed"),
])
def test_known(final: str, known_as: str | None, expected: str) -> None:
    assert outcome.known(final, known_as) == expected


def test_a_known_failure_does_not_fail_the_run() -> None:
    assert outcome.exit_code({"a": {"outcome": "known failure"}, "b": {"outcome": "passed"}}, 1) == 0
    assert outcome.exit_code({"a": {"outcome": "known failure"}, "b": {"outcome": "failed"}}, 1) == 1
