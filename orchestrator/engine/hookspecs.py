"""tbctl's own hooks, as pytest-timeout has its own: another plugin may take over the per-test
deadline timer (a `firstresult` hook: the first implementation returning True wins; tbctl's
default, a SIGALRM timer, runs last)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.hookspec(firstresult=True)
def pytest_tbctl_deadline_arm(item: pytest.Item, seconds: float, fire: Callable[[], None]) -> bool | None:
    """Start `item`'s deadline: after `seconds`, call `fire()` in the main thread (it raises the
    test's deadline exception), and again every few seconds until disarmed. True when handled."""


@pytest.hookspec(firstresult=True)
def pytest_tbctl_deadline_disarm(item: pytest.Item) -> bool | None:
    """Stop `item`'s deadline. True when handled."""
