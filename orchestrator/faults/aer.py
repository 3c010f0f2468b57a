"""PCIe Advanced Error Reporting errors raised on a controller's root port (HMP
`pcie_aer_inject_error`), as the link under a controller would raise them.

What QEMU does with one (hw/pci/pcie_aer.c; seen here): QEMU 7.2 records a correctable error in
the port's AER status and sends no message up, so no guest is told of it; QEMU 10.0 sends it, and
Linux logs "AER: Corrected error message received". An uncorrectable one goes up only while the
port's Command register has SERR# Enable and its Bridge Control has SERR enable, which Linux
leaves off: the fault sets both from the guest first (setpci), as firmware that routes errors would. Then Linux's AER driver logs it and
recovers: a non-fatal error needs no reset; a fatal one resets the link under the port, and the
nvme driver resets its controller (error_detected, slot_reset). The error's severity is the PCIe
default QEMU applies: Data Link Protocol, Surprise Down, Flow Control Protocol, Receiver Overflow,
Malformed TLP and Uncorrectable Internal are fatal, the others non-fatal."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from orchestrator.errors import ConfigError, MachineError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, Kind, Param, Timing
from orchestrator.faults.timing import Timed
from orchestrator.vm.qmp import pci_address

# The errors by QEMU's names (its HMP command's): what each is, and its bit in the AER status
# registers (PCIe base spec 7.8.4), which the fault passes: QEMU 10.0 takes only a number with -c.
UNCORRECTABLE = {"DLP": ("Data Link Protocol", 4), "SDN": ("Surprise Down", 5), "POISON_TLP": ("Poisoned TLP", 12),
                 "FCP": ("Flow Control Protocol", 13), "COMP_TIME": ("Completion Timeout", 14),
                 "COMP_ABORT": ("Completer Abort", 15), "UNX_COMP": ("Unexpected Completion", 16),
                 "RX_OVER": ("Receiver Overflow", 17), "MALF_TLP": ("Malformed TLP", 18), "ECRC": ("ECRC", 19),
                 "UNSUP": ("Unsupported Request", 20), "ACSV": ("ACS Violation", 21),
                 "INTN": ("Uncorrectable Internal", 22)}
FATAL = ("DLP", "SDN", "FCP", "RX_OVER", "MALF_TLP", "INTN")
CORRECTABLE = {"RCVR": ("Receiver Error", 0), "BAD_TLP": ("Bad TLP", 6), "BAD_DLLP": ("Bad DLLP", 7),
               "REP_ROLL": ("Replay Rollover", 8), "REP_TIMER": ("Replay Timer Timeout", 12),
               "INTERNAL": ("Corrected Internal", 14)}
SERR = "COMMAND=0x100:0x100 BRIDGE_CONTROL=0x2:0x2"  # SERR# Enable; Bridge Control's SERR enable


def severity(error: str) -> str:
    return "correctable" if error in CORRECTABLE else "fatal" if error in FATAL else "non-fatal"


def _pcie_aer(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    ctrl = m.topology.controller(a["ctrl"])
    if not ctrl.hotplug:
        raise ConfigError(f"{ctrl.id} sits on the root complex, behind no root port: hotplug = true puts it behind one")
    error, kind = a["error"], severity(a["error"])
    port = pci_address(m.qmp.execute("query-pci", timeout=t.timeout), ctrl.root_port)
    if port is None:
        raise MachineError(f"{ctrl.id}: its root port {ctrl.root_port} is not on the PCI bus")
    timed = t.timed()
    timed.delay(f"pcie-aer {ctrl.id} {error}")
    if kind != "correctable":
        m.ssh.run(f"setpci -s {shlex.quote(port)} {SERR}", timeout=t.timeout, check=True)
    name, bit = {**UNCORRECTABLE, **CORRECTABLE}[error]
    flag = "-c " if kind == "correctable" else ""
    command = f"pcie_aer_inject_error {flag}{ctrl.root_port} {1 << bit:#x}"
    said = m.qmp.hmp(command, t.timeout)
    if not said.startswith("OK"):
        raise MachineError(f"{command} ({error}): {said.strip()}")
    armed = "" if kind == "correctable" else " (SERR enabled on the port)"
    return f"{ctrl.id}'s root port {port}: {name} ({kind}) raised{armed}", timed


KINDS = (
    Kind("pcie-aer", "a PCIe AER error on a controller's root port (HMP pcie_aer_inject_error): uncorrectable ones "
         "reach the guest's AER driver (a fatal one resets the link under the controller); QEMU 7.2 only records "
         "correctable ones", (CTRL, Param("error", "the error, as QEMU names it", (*UNCORRECTABLE, *CORRECTABLE))),
         _pcie_aer),
)
