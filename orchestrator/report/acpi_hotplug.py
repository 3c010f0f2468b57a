"""Where an orderly removal stopped, read from QEMU's ACPI PCI hotplug trace (`acpi_pci_*`).

A `device_del` on q35 (ACPI hotplug, QEMU >= 6.1) goes: QEMU sets the slot's bit in the removal
register and raises a GPE (`acpi_pci_unplug_request bsel: B slot: S`); the guest's ACPI handler
selects each hotplug bus (`acpi_pci_sel_write ... <== B`) and reads its removal register
(`acpi_pci_down_read BITS`); its driver lets go and it ejects the slot (`acpi_pci_eject_slot`,
`acpi_pci_ej_write`); QEMU unrealizes the device (`acpi_pci_unplug`), and sends DEVICE_DELETED
only when the device's last reference is dropped. A missing DEVICE_DELETED is either the guest's
(it never read the request, or never ejected) or QEMU's (ejected and unrealized, never freed):
this tells which. Text in, verdict out; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REQUEST = re.compile(r"^acpi_pci_unplug_request bsel: (\d+) slot: (\d+)")
_SEL = re.compile(r"^acpi_pci_sel_write \S+ <== (\d+)")
_DOWN = re.compile(r"^acpi_pci_down_read (\d+)")
_EJECT = re.compile(r"^acpi_pci_eject_slot bsel: (\d+) slot: (\d+)")
_UNPLUG = re.compile(r"^acpi_pci_unplug ")
_PREFIX = re.compile(r"^\d+@[\d.]+:")  # a trace backend's "pid@seconds:" before the event


@dataclass(frozen=True)
class Unplug:
    """How far the last removal request in a trace got."""

    requested: bool  # QEMU raised it (device_del reached ACPI hotplug)
    read: bool = False  # the guest read the removal register with the slot's bit set
    ejected: bool = False  # the guest ejected the slot (_EJ0)
    unrealized: bool = False  # QEMU unrealized the device after the eject

    def describe(self) -> str:
        if not self.requested:
            return "QEMU's ACPI hotplug trace has no removal request for it"
        if not self.read:
            return ("QEMU raised the removal request (ACPI GPE), and the guest never read it: the guest's ACPI "
                    "hotplug handler did not run")
        if not self.ejected:
            return "the guest read the removal request but never ejected the slot: its driver did not let go"
        if not self.unrealized:
            return "the guest ejected the slot, and QEMU did not unrealize the device"
        return ("the guest ejected the slot and QEMU unrealized the device, yet QEMU never sent DEVICE_DELETED "
                "(sent once the device's last reference is dropped): the device is stuck inside QEMU, a QEMU bug")


def last_unplug(trace: str) -> Unplug:
    """The fate of the last `acpi_pci_unplug_request` in `trace` (QEMU's stderr or log file)."""
    lines = [_PREFIX.sub("", ln) for ln in trace.splitlines() if "acpi_pci_" in ln]
    start = next((i for i in range(len(lines) - 1, -1, -1) if _REQUEST.match(lines[i])), None)
    if start is None:
        return Unplug(requested=False)
    m = _REQUEST.match(lines[start])
    assert m is not None
    bsel, slot = int(m[1]), int(m[2])
    selected, read, ejected, unrealized = None, False, False, False
    for line in lines[start + 1:]:
        if m := _SEL.match(line):
            selected = int(m[1])
        elif (m := _DOWN.match(line)) and selected == bsel and int(m[1]) >> slot & 1:
            read = True
        elif (m := _EJECT.match(line)) and (int(m[1]), int(m[2])) == (bsel, slot):
            ejected = True
        elif ejected and _UNPLUG.match(line):
            unrealized = True
    return Unplug(True, read, ejected, unrealized)
