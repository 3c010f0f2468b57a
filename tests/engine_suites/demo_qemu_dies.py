"""QEMU dies of SIGSEGV under each kind of call tbctl makes to it, in a test's body, in a
fixture's setup and in its teardown: each is `qemu crashed` with QEMU's title, never an
infrastructure error, whichever call noticed first (driven by tests/test_engine.py)."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator

import pytest

from orchestrator.faults.registers import Registers
from orchestrator.machines import Machine

TIMEOUT = 60  # KVM seconds; x3 under TCG


def segv(machine: Machine, after: float = 0.0) -> None:
    """SIGSEGV to the machine's QEMU, now or `after` seconds from now (under a call in flight)."""
    assert machine.record is not None and machine.record.pid is not None
    if after:
        threading.Timer(after, os.kill, (machine.record.pid, signal.SIGSEGV)).start()
    else:
        os.kill(machine.record.pid, signal.SIGSEGV)


def test_qmp_command(machine: Machine) -> None:
    """Sent right after QEMU died, before any reader noticed."""
    segv(machine)
    machine.qmp.execute("query-pci")


def test_qmp_event_wait(machine: Machine) -> None:
    segv(machine, after=0.5)
    machine.qmp.wait_event("DEVICE_DELETED", timeout=120)


def test_qtest_command(machine: Machine) -> None:
    regs = Registers(machine, "nvme0", "host")
    with regs.qtest() as q:
        segv(machine)
        for _ in range(100_000):
            q.readl(regs.bar0)


def test_console_wait(machine: Machine) -> None:
    segv(machine, after=0.5)
    machine.console.wait_for([re.compile("a line no guest prints")], timeout=120)


@pytest.fixture
def dies_in_setup(machine: Machine) -> None:
    segv(machine)
    machine.qmp.execute("query-status")


def test_setup(dies_in_setup: None) -> None:
    """Never runs: its fixture's QMP call met QEMU's death."""


@pytest.fixture
def dies_in_teardown(machine: Machine) -> Iterator[None]:
    yield
    segv(machine)
    machine.qmp.execute("query-status")


def test_teardown(dies_in_teardown: None) -> None:
    """Passes; its fixture's teardown meets QEMU's death."""
