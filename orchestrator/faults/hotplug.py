"""Hotplug faults. Orderly: QMP device_del / device_add (the guest is asked, and acknowledges).
Surprise: the guest's own PCI core removes the function (`/sys/bus/pci/devices/BDF/remove`) with
no notice to the driver, then a bus rescan brings it back, as SPDK's sw_hotplug does.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from orchestrator.config.topology import Controller
from orchestrator.errors import MachineError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, Kind, Timing
from orchestrator.faults.timing import Timed
from orchestrator.vm.qmp import pci_address


class Hotplug(Timed):
    """Hotplug faults. Each one fires after a delay drawn from `rng` in [0, jitter) seconds: the
    timing varies from run to run to shake races out, and the run's seed replays it."""

    def __init__(self, machine: Injectable, rng: random.Random | None = None, jitter: float = 0.0):
        super().__init__(rng, jitter)
        self.machine = machine

    def _ctrl(self, ctrl_id: str) -> Controller:
        return self.machine.topology.controller(ctrl_id)

    def address(self, ctrl_id: str) -> str:
        """The controller's PCI address as the guest numbers it (from QEMU, so it works whatever
        driver is bound, or none)."""
        bdf = pci_address(self.machine.qmp.execute("query-pci"), ctrl_id)
        if bdf is None:
            raise MachineError(f"controller {ctrl_id} is not on the PCI bus (already removed?)")
        return bdf

    def remove(self, ctrl_id: str, timeout: float = 10) -> dict[str, Any]:
        """Orderly removal: device_del, DEVICE_DELETED, backing node freed."""
        self.delay(f"remove {ctrl_id}")
        return self.machine.qmp.hot_remove(self._ctrl(ctrl_id), timeout)

    def add(self, ctrl_id: str, timeout: float = 10) -> None:
        """Orderly insertion: blockdev-add + device_add on the controller's root port."""
        self.delay(f"add {ctrl_id}")
        ctrl = self._ctrl(ctrl_id)
        self.machine.qmp.hot_add(ctrl, self.machine.backing(ctrl, 1), timeout)

    def surprise_remove(self, ctrl_id: str, timeout: float = 30) -> str:
        """Remove the function from inside the guest; QEMU keeps the device. Returns its BDF."""
        self.delay(f"surprise-remove {ctrl_id}")
        bdf = self.address(ctrl_id)
        self.machine.ssh.run(f"echo 1 > /sys/bus/pci/devices/{bdf}/remove", timeout=timeout, check=True)
        return bdf

    def rescan(self, timeout: float = 30) -> None:
        """Bring surprise-removed functions back: the guest rescans its PCI buses."""
        self.delay("rescan")
        self.machine.ssh.run("echo 1 > /sys/bus/pci/rescan", timeout=timeout, check=True)


def _hotplug(m: Injectable, t: Timing) -> Hotplug:
    return Hotplug(m, t.rng, t.jitter)


def _remove(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    h = _hotplug(m, t)
    h.remove(a["ctrl"], t.timeout)
    return f"{a['ctrl']}: removed (DEVICE_DELETED)", h


def _add(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    h = _hotplug(m, t)
    h.add(a["ctrl"], t.timeout)
    return f"{a['ctrl']}: added on its root port", h


def _surprise_remove(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    h = _hotplug(m, t)
    return f"{a['ctrl']}: the guest removed PCI function {h.surprise_remove(a['ctrl'], t.timeout)}", h


def _rescan(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    h = _hotplug(m, t)
    h.rescan(t.timeout)
    return "the guest rescanned its PCI buses", h


KINDS = (
    Kind("remove", "orderly hot removal of an NVMe controller (QMP device_del, DEVICE_DELETED awaited)",
         (CTRL,), _remove),
    Kind("add", "hot-add a removed controller again on its root port (blockdev-add + device_add)", (CTRL,), _add),
    Kind("surprise-remove", "the guest's PCI core drops the controller with no notice to its driver (sysfs "
         "remove, as SPDK's sw_hotplug does); rescan brings it back", (CTRL,), _surprise_remove),
    Kind("rescan", "the guest rescans its PCI buses (surprise-removed functions come back)", (), _rescan),
)
