"""PCIe AER errors on a controller's root port (the `pcie-aer` fault, faults/aer.py), and what the
guest's kernel does with them: its AER driver logs an uncorrectable error from the port and
recovers. A non-fatal one needs no reset, and the controller goes on as it was. A fatal one
resets the link under the port, and the nvme driver resets its controller around it
(error_detected "frozen", slot_reset): I/O works again after it (not under QEMU 7.2 or 10.0:
suites/known_failures.toml). A correctable error reaches the guest from QEMU 10.0; QEMU 7.2
records it in the port's AER status only.

With --spdk-dir, SPDK's spdk_nvme_perf reads nvme0 bound as SPDK's setup.sh binds it, and a
non-fatal error lands on its port: SPDK takes no part in PCIe error recovery (neither it nor
DPDK listens for one), the kernel's AER driver finds no error handler in the device's driver
(uio_pci_generic) and says it cannot recover, and perf's I/O goes on, none of it failed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from orchestrator import guest, spdk
from orchestrator.engine.fixtures import Faults
from orchestrator.engine.session import Run
from orchestrator.errors import DeadlineError
from orchestrator.machines import Machine

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
RECOVERY = 30  # seconds for the AER driver to say how its recovery ended
PERF = "build/bin/spdk_nvme_perf"
PERF_SECONDS = 10  # perf's own run (-t): the error and the AER driver's recovery fall inside it


def port_and_disk(machine: Machine, ctrl_id: str) -> tuple[str, str]:
    """The guest's address of the controller's root port, and its namespace's block device."""
    state = guest.nvme_state(machine.ssh)[machine.topology.controller(ctrl_id).serial]
    port = machine.ssh.run(f"basename $(dirname $(readlink -f /sys/bus/pci/devices/{state['address']}))",
                           timeout=10, check=True).stdout.strip()
    return port, state["block"][0]


def wait_log(machine: Machine, pattern: str, since: int, seconds: float = RECOVERY) -> list[str]:
    """The guest kernel's lines after the first `since`, once one matches `pattern`."""
    deadline = time.monotonic() + seconds
    while True:
        lines = guest.kernel_log(machine.ssh, since)
        if any(re.search(pattern, line) for line in lines):
            return lines
        if time.monotonic() > deadline:
            raise DeadlineError(f"no kernel line matching {pattern!r} within {seconds:g} s; after the fault:\n"
                                + "\n".join(lines[-20:]))
        time.sleep(0.5)


def read_works(machine: Machine, disk: str) -> bool:
    return machine.ssh.run(f"timeout 20 dd if=/dev/{disk} of=/dev/null bs=4096 count=8 iflag=direct",
                           timeout=30).rc == 0


def test_a_non_fatal_error_is_logged_and_needs_no_reset(machine: Machine, inject: Faults) -> None:
    port, disk = port_and_disk(machine, "nvme0")
    before = len(guest.kernel_log(machine.ssh))
    said = inject(machine, "pcie-aer nvme0 COMP_TIME")
    assert said == f"nvme0's root port {port}: Completion Timeout (non-fatal) raised (SERR enabled on the port)"
    log = wait_log(machine, r"AER: device recovery (successful|failed)", before)
    text = "\n".join(log)
    assert f"pcieport {port}: AER: Uncorrected (Non-Fatal) error message received from {port}" in text, text
    assert re.search(r"\] CmpltTO\s+\(First\)", text) and "AER: device recovery successful" in text, text
    assert "reset controller" not in text, text
    assert read_works(machine, disk)


def test_a_fatal_error_resets_the_link_and_the_controller_comes_back(fresh_machine: Machine, inject: Faults) -> None:
    m = fresh_machine  # its link reset: the machine is not handed on
    port, disk = port_and_disk(m, "nvme1")
    before = len(guest.kernel_log(m.ssh))
    inject(m, "pcie-aer nvme1 DLP")
    log = wait_log(m, r"AER: device recovery (successful|failed)", before)
    text = "\n".join(log)
    assert f"pcieport {port}: AER: Uncorrected (Fatal) error message received from {port}" in text, text
    assert re.search(r"nvme nvme\d+: frozen state error detected, reset controller", text), text
    if "AER: device recovery failed" in text:  # the line before it says why
        ended = next(i for i, line in enumerate(log) if "AER: device recovery failed" in line)
        why = next((line.split("] ", 1)[-1] for line in reversed(log[:ended]) if "AER:" not in line), "")
        raise AssertionError(f"AER recovery failed after the fatal error: {why}\n{text}")
    assert read_works(m, disk)


def test_a_correctable_error_is_reported_or_recorded_as_the_qemu_does(machine: Machine, inject: Faults) -> None:
    """QEMU 10.0 sends a correctable error up, and the AER driver logs it (and clears the port's
    status); QEMU 7.2 only sets the port's Correctable Error Status bit: nothing in the log, the
    bit there for a reader of the port's AER capability."""
    port, _ = port_and_disk(machine, "nvme0")
    before = len(guest.kernel_log(machine.ssh))
    said = inject(machine, "pcie-aer nvme0 RCVR")
    assert said == f"nvme0's root port {port}: Receiver Error (correctable) raised"
    if machine.qemu.at_least(10):
        wait_log(machine, rf"pcieport {port}: AER: Corrected error message received from {port}", before)
        return
    status = int(machine.ssh.run(f"setpci -s {port} ECAP_AER+0x10.l", timeout=10, check=True).stdout, 16)
    assert status & 0x1, f"{status:#x}"  # Receiver Error Status
    machine.ssh.run(f"setpci -s {port} ECAP_AER+0x10.l=0x1", timeout=10, check=True)  # RW1C: cleared again
    assert not any("AER" in line for line in guest.kernel_log(machine.ssh, before))


def test_spdk_perf_reads_on_through_a_non_fatal_error(machine: Machine, inject: Faults, run: Run,
                                                      artifacts: Path) -> None:
    tree = run.spdk_tree(PERF)
    port, _ = port_and_disk(machine, "nvme0")
    before = len(guest.kernel_log(machine.ssh))
    with spdk.claimed(machine.ssh, machine.topology, machine.topology.controller("nvme0")) as bdf, \
            spdk.running(machine.ssh, tree, PERF, ["-q", "8", "-o", "4096", "-w", "randread", "-t", str(PERF_SECONDS),
                                                   "-r", f"trtype:PCIe traddr:{bdf}"],
                         "Launching workers", PERF_SECONDS * 6) as perf:
        inject(machine, "pcie-aer nvme0 COMP_TIME")
        text = "\n".join(wait_log(machine, r"AER: device recovery (successful|failed)", before))
        res = perf.wait(PERF_SECONDS * 3)
    (artifacts / "spdk_nvme_perf.log").write_text(res.stdout + res.stderr)
    assert f"pcieport {port}: AER: Uncorrected (Non-Fatal) error message received from {port}" in text, text
    assert re.search(rf"uio_pci_generic {bdf}: AER: can't recover \(no error_detected callback\)", text), text
    out = res.stdout + res.stderr
    assert res.rc == 0 and "errors occurred" not in out and re.search(r"^Total\s+:\s+[1-9]", out, re.M), out[-2000:]
