"""Failures on a known-failure list (driven by tests/test_engine.py with demo_known.toml): no VM."""

from __future__ import annotations

import time

import pytest

TIMEOUT = 0.2  # KVM seconds; x3 under TCG (a body that only sleeps: any deadline will do)


def test_passes() -> None:
    assert sum(range(4)) == 6


def test_loses_its_controller() -> None:
    """Fails the way the list knows (its signature, numbers and all)."""
    raise AssertionError("controller lost at 0x1f after 12 s")


def test_loses_its_controller_otherwise() -> None:
    """Listed, but for another failure: this one is still a failure."""
    raise AssertionError("namespace 1 vanished")


def test_known_on_another_kernel() -> None:
    """Listed for a guest kernel this run does not use."""
    raise AssertionError("controller lost at 0x1f after 12 s")


@pytest.mark.parametrize("where", ["admin[0]", "io[1]"])
def test_hangs(where: str) -> None:
    """A timeout listed for one parameter only (brackets in the rule match themselves)."""
    time.sleep(600)
