"""Results finer than a test: the steps a test reports as it learns them (an SPDK script's
`run_test` steps), each its own record in results.json, its own JUnit testcase (through pytest's
own report hook, as pytest-subtests does) and its own summary line, named `PREFIX::STEP`.

A step that did not finish ("unfinished": the script was killed, or its guest or QEMU died in
it) takes the outcome of the test it ran in, which the engine knows only at the test's end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

UNFINISHED = "unfinished"


@dataclass(frozen=True)
class Step:
    nodeid: str  # SCRIPT::STEP
    outcome: str  # passed, failed, or UNFINISHED
    seconds: float
    message: str = ""


STEPS = pytest.StashKey[list[Step]]()
ALIAS = pytest.StashKey[str]()
Known = Callable[[str, dict[str, Any]], dict[str, Any] | None]  # (test id, record) -> its known-failure rule


def add(item: pytest.Item, step: Step) -> None:
    item.stash.setdefault(STEPS, []).append(step)


def alias(item: pytest.Item, name: str) -> None:
    """The name the test goes by in known-failure rules (`spdk:PATH` for a script), not SUITE::TEST."""
    item.stash[ALIAS] = name


def outcome_of(step: Step, test_outcome: str) -> str:
    """A step's own outcome; an unfinished one's is its test's (failed, if its test passed)."""
    if step.outcome != UNFINISHED:
        return step.outcome
    return test_outcome if test_outcome not in ("passed", "skipped", "known failure") else "failed"


def emit(item: pytest.Item, test_outcome: str, test_entry: dict[str, Any], known: Known) -> list[dict[str, Any]]:
    """The records of the test's steps (a failure on the known-failure list: `known failure`, its
    rule kept), each also reported to pytest (JUnit, the terminal)."""
    records = []
    for step in item.stash.get(STEPS, []):
        outcome = outcome_of(step, test_outcome)
        message = step.message if step.outcome != UNFINISHED else (
            f"did not finish: {test_entry.get('message') or 'the script ended inside it'}")
        record = {"nodeid": step.nodeid, "duration": round(step.seconds, 3), "outcome": outcome,
                  "message": message, "part_of": item.nodeid, "artifacts": test_entry.get("artifacts")}
        rule = known(step.nodeid, record) if outcome != "passed" else None
        if rule is not None:
            record.update(outcome="known failure", known=rule)
        records.append(record)
        shown: Literal["passed", "failed", "skipped"] = (
            "passed" if outcome == "passed" else "skipped" if rule is not None else "failed")
        call = pytest.TestReport(step.nodeid, item.location, {}, shown, None if shown == "passed" else message,
                                 "call", duration=step.seconds)
        if rule is not None:  # an expected failure, as pytest (and its JUnit) shows one
            call.wasxfail = f"known failure: {rule['reason']}"
        end = pytest.TestReport(step.nodeid, item.location, {}, "passed", None, "teardown",
                                user_properties=[("outcome", record["outcome"])])
        for rep in (call, end):
            item.ihook.pytest_runtest_logreport(report=rep)
    return records
