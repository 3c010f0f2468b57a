"""Machine-free tests for shard and merge checks (driven by tests/test_shards.py)."""

import os

import pytest


@pytest.mark.parametrize("n", range(3))
def test_counts(n: int) -> None:
    """Passes."""
    assert n in range(3)


def test_fails_when_told() -> None:
    """Fails when TBCTL_DEMO_FAIL names it: the run a baseline is compared with."""
    assert "alpha" not in os.environ.get("TBCTL_DEMO_FAIL", "")
