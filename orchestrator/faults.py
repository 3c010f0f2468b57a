"""Fault injectors, usable from suites and the CLI. This wave: NVMe hotplug, orderly and surprise.

Orderly: QMP device_del / device_add (the guest is asked, and acknowledges). Surprise: the guest's
own PCI core removes the function (`/sys/bus/pci/devices/BDF/remove`) with no notice to the
driver beforehand, then a bus rescan brings it back - what SPDK's sw_hotplug does today.
"""

from __future__ import annotations

from typing import Any

from .errors import MachineError
from .machine import Machine
from .topology import Controller


def pci_address(pci: list[dict[str, Any]], qdev_id: str) -> str | None:
    """The guest-visible BDF of device `qdev_id` in a `query-pci` answer (bridges included)."""
    def walk(devices: list[dict[str, Any]]) -> str | None:
        for d in devices:
            if d.get("qdev_id") == qdev_id:
                return f"0000:{d['bus']:02x}:{d['slot']:02x}.{d['function']:x}"
            found = walk(d.get("pci_bridge", {}).get("devices", []))
            if found:
                return found
        return None

    for bus in pci:
        if found := walk(bus.get("devices", [])):
            return found
    return None


class Hotplug:
    def __init__(self, machine: Machine):
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
        return self.machine.qmp.hot_remove(self._ctrl(ctrl_id), timeout)

    def add(self, ctrl_id: str, timeout: float = 10) -> None:
        """Orderly insertion: blockdev-add + device_add on the controller's root port."""
        ctrl = self._ctrl(ctrl_id)
        self.machine.qmp.hot_add(ctrl, self.machine.backing(ctrl, 1), timeout)

    def surprise_remove(self, ctrl_id: str, timeout: float = 30) -> str:
        """Remove the function from inside the guest; QEMU keeps the device. Returns its BDF."""
        bdf = self.address(ctrl_id)
        self.machine.ssh.run(f"echo 1 > /sys/bus/pci/devices/{bdf}/remove", timeout=timeout, check=True)
        return bdf

    def rescan(self, timeout: float = 30) -> None:
        """Bring surprise-removed functions back: the guest rescans its PCI buses."""
        self.machine.ssh.run("echo 1 > /sys/bus/pci/rescan", timeout=timeout, check=True)
