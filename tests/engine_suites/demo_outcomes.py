"""Deliberate failures: how tbctl tells outcomes apart (driven by tests/test_engine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import faults, spdk
from orchestrator.engine.session import Run
from orchestrator.faults import Hotplug
from orchestrator.guest.hotplug_app import KernelHotplugApp
from orchestrator.machines import Machine

TIMEOUT = 5  # KVM seconds; x3 under TCG
AER_WAIT = 10


def test_passes(machine: Machine) -> None:
    """A guest command works."""
    assert machine.ssh.run("true", timeout=10).ok


def test_app_misses_events(machine: Machine, hotplug: Hotplug, artifacts: Path) -> None:
    """The app is paused across a remove + add: it misses both, and the failure names them."""
    with KernelHotplugApp(machine.ssh, artifacts / "app.log") as app:
        app.start(inserts=1, removals=1, seconds=60)
        app.signal("STOP")
        machine.hot_remove("nvme0")  # each confirmed from the guest's side, not by the app
        machine.hot_add("nvme0")
        app.signal("CONT")
        app.expect("remove", "TBCTL0001", 3, " (nvme0, cycle 1/1)")


def test_app_hangs(machine: Machine, artifacts: Path) -> None:
    """The app stops and never exits: the test deadline fires and the app is killed."""
    app = KernelHotplugApp(machine.ssh, artifacts / "app.log")
    app.start(inserts=1, removals=1, seconds=600)
    app.signal("STOP")
    app.finish()


def test_after_the_hang_no_app_is_left(machine: Machine) -> None:
    """The hung app of the test before was killed at its deadline."""
    ps = machine.ssh.run("ps -eo stat=,comm=", timeout=10, check=True).stdout.splitlines()
    assert [line for line in ps if line.split()[-1] == "python3" and not line.startswith("Z")] == []


@pytest.mark.tb_timeout(60)
def test_spdk_app_waits_for_an_aer_that_never_comes(machine: Machine, hotplug: Hotplug, run: Run,
                                                    artifacts: Path) -> None:
    """The SPDK doorbell_aers stand-in told to arm no AER: it waits forever for the first Error
    AER; tbctl interrupts it, and the timeout says why from QEMU's trace."""
    bdf = hotplug.address("nvme0")
    tree = run.spdk_tree(spdk.DOORBELL_AERS)
    spdk.prepare(machine.ssh, [bdf], spdk.driver(machine.topology))
    machine.ssh.run("mkdir -p /run/spdk-standin && touch /run/spdk-standin/no-aer", timeout=10, check=True)
    with faults.NvmeTrace(machine) as trace:
        run = spdk.doorbell_aers(machine.ssh, tree, bdf, artifacts / "doorbell_aers.log", AER_WAIT)
        why = trace.aer_diagnosis()
    run.check(AER_WAIT, why)


def test_controller_dies_under_a_waiting_app(fresh_machine: Machine) -> None:
    """Bus mastering cleared, then an admin command: it never completes; the deadline fires and
    the diagnosis names the controller's fatal status."""
    with faults.NvmeTrace(fresh_machine):
        faults.bus_master(fresh_machine, "nvme0", enable=False)
        fresh_machine.ssh.run("nvme id-ctrl /dev/nvme0", timeout=300)
