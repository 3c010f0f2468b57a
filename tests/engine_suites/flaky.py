"""A deliberately flaky test, for `tbctl repro` (driven by tests/test_repro.py)."""

from __future__ import annotations

import pytest

from orchestrator.engine.session import Run
from orchestrator.machines import Machine

FAIL_RATE = 0.3


def test_flaky(request: pytest.FixtureRequest, machine: Machine, run: Run) -> None:
    """Fails in about 30% of runs, as a race does that only some fault timings hit: whether it
    fails is drawn from the run's seed, the way the timing of injected faults is, so `--seed`
    replays a failing run exactly."""
    assert machine.ssh.run("true", timeout=30).ok
    window = run.rng(request.node).random()
    assert window >= FAIL_RATE, f"the fault fired inside the race window ({window:.2f} < {FAIL_RATE})"
