"""Machine-free tests for shard and merge checks (driven by tests/test_shards.py)."""

import os

import pytest


def test_fails() -> None:
    """Always fails, with the same words."""
    assert 1 + 1 == 3, "one and one are not three"


def test_skips() -> None:
    """Skipped."""
    pytest.skip("nothing to do here")


def test_fails_when_told() -> None:
    """Fails when TBCTL_DEMO_FAIL names it."""
    assert "beta" not in os.environ.get("TBCTL_DEMO_FAIL", "")
