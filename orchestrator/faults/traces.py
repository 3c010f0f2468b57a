"""QEMU's NVMe trace events (pci_nvme_*) for a window, switched on and off at run time over QMP
and read from QEMU's stderr; and what they say about an Error AER that never came."""

from __future__ import annotations

import re
import time

from orchestrator.errors import DeadlineError
from orchestrator.faults.injectable import Injectable

_INFO = re.compile(r"\binfo (0x[0-9a-f]+)\b")


class NvmeTrace:
    """QEMU's NVMe trace events (pci_nvme_*) while the block runs, from QEMU's stderr.

    `with NvmeTrace(machine) as t: ...; t.wait("pci_nvme_enqueue_event", "type 0x0 info 0x1")`
    """

    PATTERN = "pci_nvme_*"

    def __init__(self, machine: Injectable):
        self.machine = machine
        self.log = machine.stderr_log
        self._start = 0

    def __enter__(self) -> NvmeTrace:
        self._start = self.log.stat().st_size
        self.machine.qmp.execute("trace-event-set-state", {"name": self.PATTERN, "enable": True})
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.machine.qmp.execute("trace-event-set-state", {"name": self.PATTERN, "enable": False})
        except Exception:
            pass  # QEMU may be gone; the lines written so far stay readable

    def lines(self) -> list[str]:
        with open(self.log, "rb") as f:
            f.seek(self._start)
            text = f.read().decode(errors="replace")
        return [ln.split(":", 1)[-1] if "@" in ln.split(" ", 1)[0] else ln
                for ln in text.splitlines() if "pci_nvme_" in ln]

    def find(self, event: str, contains: str = "") -> list[str]:
        return [ln for ln in self.lines() if ln.split(" ", 1)[0] == event and contains in ln]

    def error_aers(self) -> list[str]:
        """The info field (0x0, 0x1...) of every Error AER completion QEMU posted; a line QEMU was
        still writing when read counts as "cut", never as an error of the parse."""
        return [m[1] if (m := _INFO.search(ln)) else "cut" for ln in self.find("pci_nvme_aer_post_cqe", "type 0x0 ")]

    def wait(self, event: str, contains: str = "", timeout: float = 10) -> str:
        """The first trace line of `event` containing `contains`; QEMU writes it asynchronously."""
        deadline = time.monotonic() + timeout
        while not (found := self.find(event, contains)):
            if time.monotonic() > deadline:
                raise DeadlineError(f"QEMU trace: no {event} {contains!r} within {timeout:g} s")
            time.sleep(0.05)
        return found[0]

    def aer_diagnosis(self) -> str:
        """Why a driver waiting for an Error AER got none, as QEMU's trace tells it (7.2's
        nvme_process_db / nvme_process_aers)."""
        bad = [ln for ln in self.lines() if ln.startswith("pci_nvme_ub_db_wr_invalid")]
        if cfs := self.find("pci_nvme_err_cfs"):
            errs = self.find("pci_nvme_err_addr_read") + self.find("pci_nvme_err_addr_write")
            return f"controller fatal status (CSTS.CFS): {' | '.join((errs + cfs)[:2])}"
        if not bad:
            return "QEMU saw no invalid doorbell write"
        if masked := self.find("pci_nvme_aer_masked") + self.find("pci_nvme_enqueue_event_masked"):
            return (f"QEMU saw {bad[0]} but masked the error event until log page 01h is read: {masked[-1]}")
        if self.find("pci_nvme_no_outstanding_aers") or not self.find("pci_nvme_enqueue_event"):
            return f"QEMU saw {bad[0]} but no Asynchronous Event Request was outstanding"
        if posted := self.find("pci_nvme_aer_post_cqe"):
            return f"QEMU posted the AER completion ({posted[-1]}): the driver did not reap it"
        return f"QEMU saw {bad[0]} and queued the event, but posted no AER completion"
