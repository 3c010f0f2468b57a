"""Machine-free tests for shard and merge checks (driven by tests/test_shards.py)."""


def test_passes() -> None:
    """Passes."""
    assert sum([1, 2]) == 3
