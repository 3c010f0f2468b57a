"""--keep-vm keeps what failed (driven by tests/test_engine.py)."""

from __future__ import annotations

from orchestrator.machines import Machine

NAMES: list[str] = []


def test_passes(machine: Machine) -> None:
    NAMES.append(machine.name)


def test_fails_leaving_a_clue(machine: Machine) -> None:
    """Leaves a file behind for whoever gets into the kept VM, then fails."""
    assert machine.name == NAMES[0]
    machine.ssh.run("echo the clue > /root/clue", timeout=30, check=True)
    raise AssertionError("failed on purpose")


def test_next_gets_another_machine(machine: Machine) -> None:
    assert machine.name != NAMES[0]
