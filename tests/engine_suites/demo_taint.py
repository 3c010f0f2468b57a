"""A test that leaves its machine broken does not hand it on (driven by tests/test_engine.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from orchestrator import guest
from orchestrator.faults import Hotplug
from orchestrator.machine import Machine

TIMEOUT = 30  # KVM seconds; x3 under TCG
NAMES: list[str] = []


@pytest.fixture
def unrestorable(machine: Machine, hotplug: Hotplug) -> Iterator[None]:
    yield
    hotplug.remove("nvme1")  # what a failed restore leaves: a controller unplugged
    raise RuntimeError("could not restore the machine: nvme1 stays unplugged")


def test_breaks_its_machine(machine: Machine, unrestorable: None) -> None:
    """Passes, but its teardown cannot restore the machine: an infrastructure error."""
    NAMES.append(machine.name)


def test_next_gets_a_machine_in_order(machine: Machine) -> None:
    """Another machine, with every controller there."""
    assert machine.name not in NAMES, "the broken machine was handed on"
    serials = [c.serial for c in machine.topology.controllers]
    guest.NvmeWatch(machine.ssh, serials, True, 30, expect_change=False).result()
