"""Network faults on a machine's NIC: pulled and put back (QMP device_del + netdev_del, then
netdev_add + device_add on its own root port, the same two ends; or, as SPDK's device_removal.sh
does it, removed from the guest's PCI bus in sysfs and found again by a rescan; either way the
guest gives it its address again), or its link set down and up (QMP set_link: the NIC stays, the
carrier goes)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import MachineError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import Fire, Kind, Param, Timing
from orchestrator.faults.timing import Timed
from orchestrator.guest import net

VIAS = ("qmp", "guest")  # who pulls a NIC: QEMU (device_del), or the guest (sysfs remove)


class NicFault(Timed):
    """One NIC of `machine` (a machine of a bed: it has `links`). Each fault fires after a delay
    drawn from `rng` in [0, jitter) seconds, as Hotplug's do."""

    def __init__(self, machine: Injectable, nic_id: str, rng: random.Random | None = None, jitter: float = 0.0):
        super().__init__(rng, jitter)
        self.machine = machine
        matches = [n for n in machine.topology.nics if n.id == nic_id]
        if not matches:
            raise MachineError(f"no NIC {nic_id!r} in topology {machine.topology.source}; NICs: "
                               f"{', '.join(n.id for n in machine.topology.nics) or 'none'}")
        self.nic = matches[0]

    def remove(self, timeout: float = 10, via: str = "qmp") -> dict[str, Any]:
        """The NIC is pulled: by QEMU (`qmp`: the guest is asked through ACPI, must let go, and
        QEMU frees it) or by the guest itself (`guest`: its PCI device removed in sysfs, as SPDK's
        device_removal.sh does; QEMU keeps it). Returns DEVICE_DELETED, or the guest's PCI address."""
        if via not in VIAS:
            raise ValueError(f"via {via!r}: must be one of {', '.join(VIAS)}")
        if via == "qmp" and not self.nic.hotplug:
            raise MachineError(f"NIC {self.nic.id} is not hot-pluggable (hotplug = false in the topology)")
        self.delay(f"nic-remove {self.nic.id}" + (" (guest)" if via == "guest" else ""))
        if via == "guest":
            return {"pci": net.pci_remove(self.machine.ssh, self.nic.mac(self.machine.topology.name), timeout)}
        event = self.machine.qmp.unplug(self.nic.id, timeout)
        self.machine.qmp.execute("netdev_del", {"id": self.nic.id}, timeout)
        return event

    def add(self, timeout: float = 30, via: str = "qmp") -> str:
        """The NIC is back, on the same network, with its address (`via` as it was removed: QEMU
        plugs it in again, or the guest rescans its PCI bus); returns its name in the guest."""
        self.delay(f"nic-add {self.nic.id}" + (" (guest)" if via == "guest" else ""))
        if via == "guest":
            net.pci_rescan(self.machine.ssh, timeout)
        else:
            self.machine.qmp.hot_add_nic(self.nic, self.machine.topology.name, self.machine.links[self.nic.id], timeout)
        return net.address_when_probed(self.machine.ssh, self.nic.mac(self.machine.topology.name), self.nic.address,
                                       timeout)

    def down(self, timeout: float = 20) -> str:
        """The NIC's carrier goes; returns once the guest saw it (its name for the NIC)."""
        return self._link(False, timeout)

    def up(self, timeout: float = 20) -> str:
        """The NIC's carrier is back; returns once the guest saw it (its name for the NIC)."""
        return self._link(True, timeout)

    def _link(self, up: bool, timeout: float) -> str:
        self.delay(f"link-{'up' if up else 'down'} {self.nic.id}")
        self.machine.qmp.execute("set_link", {"name": self.nic.id, "up": up}, timeout)
        return net.carrier(self.machine.ssh, self.nic.mac(self.machine.topology.name), up, timeout)


def _nic_remove(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    link = NicFault(m, a["nic"], t.rng, t.jitter)
    event = link.remove(t.timeout, a["via"])
    return f"{a['nic']}: pulled; " + (f"the guest removed PCI device {event['pci']}" if a["via"] == "guest"
                                       else f"DEVICE_DELETED {event.get('data', {}).get('device', a['nic'])}"), link


def _nic_add(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    link = NicFault(m, a["nic"], t.rng, t.jitter)
    name = link.add(max(t.timeout, 30), a["via"])  # the guest's driver probes it, then DHCP or a fixed address
    return f"{a['nic']}: back as {name} with {link.nic.address}", link


def _link(up: bool) -> Fire:
    def fire(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
        link = NicFault(m, a["nic"], t.rng, t.jitter)
        name = (link.up if up else link.down)(max(t.timeout, 20))
        return f"{a['nic']}: link {'up' if up else 'down'}; the guest's {name} " + \
            ("has its carrier" if up else "lost its carrier"), link
    return fire


_NIC = Param("nic", "the NIC's id in the bed (e.g. fabric0)")
_VIA = Param("via", "QEMU pulls it (device_del) or the guest removes it from its PCI bus (sysfs, as SPDK's "
                    "device_removal.sh) and rescans", VIAS, "qmp")
KINDS = (
    Kind("nic-remove", "pull a bed machine's NIC (QMP device_del + netdev_del, or --via guest)", (_NIC, _VIA),
         _nic_remove),
    Kind("nic-add", "put a pulled NIC back on its network, with its address", (_NIC, _VIA), _nic_add),
    Kind("link-down", "set a NIC's link down (QMP set_link): the NIC stays, the carrier goes", (_NIC,), _link(False)),
    Kind("link-up", "set a NIC's link up again", (_NIC,), _link(True)),
)
