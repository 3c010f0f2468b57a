"""How a test ended, from what its phases reported: a pure classifier (no pytest, no I/O), so each
rule is a row in a table of cases (tests/test_outcome.py).

Outcomes, least severe first, are errors.OUTCOMES; a test's outcome is the most severe any of its
phases gave. A machine whose test did not end passed, failed or skipped is discarded, never handed
to the next test."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import OUTCOMES

# Outcomes after which a machine's state is unknown: it is discarded, never handed to the next test.
DISCARD = ("timed out", "guest crashed", "qemu crashed", "infrastructure error")
CRASHES = ("guest crashed", "qemu crashed")
# What a known-failure rule may stand for: the test's own failures, never the test-bed's.
KNOWABLE = ("failed", "timed out", *CRASHES)
EXIT_PASSED, EXIT_FAILED, EXIT_INFRA = 0, 1, 2


def worst(so_far: str | None, kind: str | None) -> str | None:
    """The more severe of two outcomes (None: nothing yet, nothing new)."""
    if kind is None or so_far is None:
        return kind or so_far
    return kind if OUTCOMES.index(kind) >= OUTCOMES.index(so_far) else so_far


def setup(skipped: bool, failed: bool, qemu_died: bool = False) -> str | None:
    """A fixture that skipped skips the test; one that failed is the test-bed's fault, unless QEMU
    died on its own under it: QEMU's death is QEMU's, whatever call noticed it."""
    return "skipped" if skipped else crash(True) if failed and qemu_died else "infrastructure error" if failed else None


def call(passed: bool, skipped: bool, timed_out: bool, crash: str | None) -> str:
    """The body: a crash outranks the deadline, which outranks the body's own verdict."""
    if crash:
        return crash
    if timed_out:
        return "timed out"
    return "passed" if passed else "skipped" if skipped else "failed"


def timed_out(deadline_fired: bool, deadline_error: bool, fatal_crash: bool) -> bool:
    """The test's deadline fired, or a wait of its own did (DeadlineError), and no fatal crash
    explains the wait."""
    return (deadline_fired or deadline_error) and not fatal_crash


def crash(qemu_died: bool) -> str:
    return "qemu crashed" if qemu_died else "guest crashed"


def teardown(failed: bool, so_far: str | None, qemu_died: bool = False) -> str | None:
    """A teardown that failed is the test-bed's fault, unless it could not restore a machine whose
    QEMU or kernel died: that is the crash's consequence, not another finding; a QEMU that died
    on its own under the teardown itself is a QEMU crash."""
    if not failed or so_far in CRASHES:
        return None
    return crash(True) if qemu_died else "infrastructure error"


def known(final: str, known_as: str | None) -> str:
    """A failure that matched a known-failure rule is `known failure`, as long as nothing later
    (teardown) made the test end worse than what the rule was matched on."""
    return "known failure" if known_as is not None and final == known_as else final


def final(so_far: str | None) -> str:
    """A test whose phases gave no outcome at all (interrupted before its body reported) did not
    complete: the test-bed's fault."""
    return so_far or "infrastructure error"


def discard(qemu_died: bool, unplug_lost: str | None, outcome: str) -> str | None:
    """Why a machine must not be handed to the next test, if it must not."""
    if qemu_died:
        return "QEMU died"
    if unplug_lost:
        return f"half-unplugged: {unplug_lost}"
    if outcome in DISCARD:
        return f"the test ended {outcome}: the machine's state is unknown"
    return None


def exit_code(results: dict[str, dict[str, Any]], session_status: int) -> int:
    """0 all passed, 1 a test failed/timed out/crashed, 2 infrastructure error or incomplete."""
    kinds = {r.get("outcome", "infrastructure error") for r in results.values()}
    if "infrastructure error" in kinds or session_status not in (0, 1) or not results:
        return EXIT_INFRA
    if kinds & {"failed", "timed out", *CRASHES}:
        return EXIT_FAILED
    return EXIT_PASSED
