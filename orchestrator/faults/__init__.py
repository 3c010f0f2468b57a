"""Fault injection, from suites and `tbctl inject`: hotplug (orderly and surprise), registers
(invalid doorbells, bus master, admin queue, fatal status; from the host through qtest or from the
guest), SMART critical warnings, network links (NIC pulled and put back, link down and up), a
target stopped (app signalled, machine paused) and QEMU's NVMe trace. Each takes the narrow
Injectable it needs (QMP, SSH, topology, qtest socket), never a machine's insides; each kind is a
row of the fault table (table.py), which `tbctl inject`, `tbctl list --faults` and marker faults
(marker.py) read. Imports vm, guest, config, report and the base modules."""

from orchestrator.faults.hotplug import Hotplug
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.nic import NicFault
from orchestrator.faults.registers import (
    DOORBELL_KINDS,
    PCI_COMMAND_MASTER,
    VIAS,
    Registers,
    admin_queue,
    bus_master,
    controller_fatal,
    invalid_doorbell,
    userspace_admin_command,
)
from orchestrator.faults.stop import Stop
from orchestrator.faults.traces import NvmeTrace

__all__ = ["DOORBELL_KINDS", "PCI_COMMAND_MASTER", "VIAS", "Hotplug", "Injectable",
           "NicFault", "NvmeTrace", "Registers", "Stop", "admin_queue", "bus_master", "controller_fatal",
           "invalid_doorbell", "userspace_admin_command"]
