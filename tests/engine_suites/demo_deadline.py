"""A test body that tries to outlive its deadline (driven by tests/test_engine.py): no VM."""

from __future__ import annotations

import time

import pytest

from orchestrator.errors import DeadlineError

TIMEOUT = 0.2  # KVM seconds; x3 under TCG (a body that only sleeps: any deadline will do)


def test_expects_a_deadline_of_its_own() -> None:
    """Waits inside `pytest.raises(DeadlineError)`, as a suite does for a command that must hang:
    the test's own deadline is not that error."""
    with pytest.raises(DeadlineError):
        time.sleep(600)


def test_swallows_everything() -> None:
    """Catches even BaseException and goes on: the deadline fires again, and still counts."""
    try:
        time.sleep(600)
    except BaseException:
        pass
    time.sleep(600)


def test_catches_and_passes() -> None:
    """Catches the deadline and returns: a body that ran past its deadline did not pass."""
    try:
        time.sleep(600)
    except BaseException:
        pass
