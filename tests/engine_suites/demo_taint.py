"""A test that leaves its machine broken does not hand it on (driven by tests/test_engine.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from orchestrator import guest
from orchestrator.errors import DeadlineError
from orchestrator.faults import Hotplug
from orchestrator.machines import Machine

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


def test_qemu_dies_of_sigsegv(machine: Machine) -> None:
    """QEMU killed with SIGSEGV mid-test (as its nvme_process_db use-after-free does): the test
    ends at once as qemu crashed, titled from QEMU's core."""
    NAMES.append(machine.name)
    machine.ssh.run("true", timeout=10)
    assert machine.record is not None and machine.record.pid is not None
    os.kill(machine.record.pid, signal.SIGSEGV)
    machine.ssh.run("sleep 600", timeout=600)


def test_after_the_qemu_crash_a_machine_in_order(machine: Machine) -> None:
    """Another machine, with every controller there."""
    test_next_gets_a_machine_in_order(machine)


def test_guest_ignores_the_unplug(machine: Machine, hotplug: Hotplug) -> None:
    """The guest never acknowledges a device_del (its vCPUs are stopped): no DEVICE_DELETED, and
    the half-unplugged machine is thrown away, though the test itself only failed."""
    NAMES.append(machine.name)
    machine.qmp.execute("stop")
    try:
        with pytest.raises(DeadlineError, match="no DEVICE_DELETED"):
            hotplug.remove("nvme0", timeout=3)
    finally:
        machine.qmp.execute("cont")
    time.sleep(1)
    pytest.fail("the unplug was lost")


def test_after_the_lost_unplug_a_machine_in_order(machine: Machine) -> None:
    """Another machine, with every controller there."""
    test_next_gets_a_machine_in_order(machine)
