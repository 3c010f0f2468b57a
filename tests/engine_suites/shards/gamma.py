"""Machine-free tests for shard and merge checks (driven by tests/test_shards.py)."""

import os
from pathlib import Path


def test_passes() -> None:
    """Passes."""
    assert sum([1, 2]) == 3


def test_flaky_when_told() -> None:
    """With TBCTL_DEMO_FLAKY=DIR: fails the first time it runs (leaving a mark in DIR), then passes."""
    where = os.environ.get("TBCTL_DEMO_FLAKY")
    if where:
        mark = Path(where) / "ran-once"
        first = not mark.exists()
        mark.touch()
        assert not first, "first attempt fails"
