"""Fault injectors, usable from suites and the CLI (`tbctl inject`).

- Hotplug. Orderly: QMP device_del / device_add (the guest is asked, and acknowledges).
  Surprise: the guest's own PCI core removes the function (`/sys/bus/pci/devices/BDF/remove`)
  with no notice to the driver, then a bus rescan brings it back, as SPDK's sw_hotplug does.
- Invalid NVMe doorbell writes and PCI bus-master clear/restore, from the host (qtest socket:
  lands whatever the guest is doing) or from the guest (one aligned 32-bit store through
  /dev/mem with busybox devmem: two 16-bit stores make QEMU see a tail of 0 and replay stale
  commands, DESIGN.md section 3).
- QEMU's NVMe trace events for a window, parsed.
"""

from __future__ import annotations

import random
import time
from typing import Any

from . import nvme_queues
from .errors import DeadlineError, MachineError
from .machine import Machine
from .qmp import pci_address, pci_device
from .qtest import QTest
from .topology import Controller


class Hotplug:
    """Hotplug faults. Each one fires after a delay drawn from `rng` in [0, jitter) seconds: the
    timing varies from run to run to shake races out, and the run's seed replays it."""

    def __init__(self, machine: Machine, rng: random.Random | None = None, jitter: float = 0.0):
        self.machine, self.rng, self.jitter = machine, rng or random.Random(0), jitter
        self.schedule: list[tuple[str, float]] = []  # (fault, delay before it) as fired

    def _delay(self, what: str) -> None:
        delay = self.rng.uniform(0, self.jitter) if self.jitter > 0 else 0.0
        self.schedule.append((what, round(delay, 4)))
        if delay:
            time.sleep(delay)

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
        self._delay(f"remove {ctrl_id}")
        return self.machine.qmp.hot_remove(self._ctrl(ctrl_id), timeout)

    def add(self, ctrl_id: str, timeout: float = 10) -> None:
        """Orderly insertion: blockdev-add + device_add on the controller's root port."""
        self._delay(f"add {ctrl_id}")
        ctrl = self._ctrl(ctrl_id)
        self.machine.qmp.hot_add(ctrl, self.machine.backing(ctrl, 1), timeout)

    def surprise_remove(self, ctrl_id: str, timeout: float = 30) -> str:
        """Remove the function from inside the guest; QEMU keeps the device. Returns its BDF."""
        self._delay(f"surprise-remove {ctrl_id}")
        bdf = self.address(ctrl_id)
        self.machine.ssh.run(f"echo 1 > /sys/bus/pci/devices/{bdf}/remove", timeout=timeout, check=True)
        return bdf

    def rescan(self, timeout: float = 30) -> None:
        """Bring surprise-removed functions back: the guest rescans its PCI buses."""
        self._delay(f"rescan")
        self.machine.ssh.run("echo 1 > /sys/bus/pci/rescan", timeout=timeout, check=True)


# NVMe register map (NVMe base spec 3.1); QEMU's doorbell stride is 4 bytes (CAP.DSTRD = 0).
REG_AQA, REG_CSTS, DOORBELLS = 0x24, 0x1C, 0x1000
CSTS_CFS = 1 << 1
PCI_COMMAND, PCI_COMMAND_MASTER = 0x04, 1 << 2
# Invalid doorbell kinds -> the Error AER QEMU posts: (type, info). Type 0 = error status;
# info 0 = write to an invalid doorbell register, 1 = invalid doorbell write value.
DOORBELL_KINDS = {"sq-nonexistent": (0, 0), "cq-nonexistent": (0, 0), "sq-tail-too-big": (0, 1),
                  "cq-head-too-big": (0, 1)}
VIAS = ("host", "guest")


class Registers:
    """BAR0 and config-space access to one controller, from the host (qtest) or the guest."""

    def __init__(self, machine: Machine, ctrl_id: str, via: str):
        if via not in VIAS:
            raise MachineError(f"via {via!r}: must be one of {', '.join(VIAS)}")
        if via == "host" and not machine.topology.qtest:
            raise MachineError("host-side register access needs a qtest socket: qtest = true in the topology")
        self.machine, self.ctrl, self.via = machine, machine.topology.controller(ctrl_id), via
        dev = pci_device(machine.qmp.execute("query-pci"), ctrl_id)
        if dev is None:
            raise MachineError(f"controller {ctrl_id} is not on the PCI bus")
        self.bdf = f"0000:{dev['bus']:02x}:{dev['slot']:02x}.{dev['function']:x}"
        bars = [r for r in dev.get("regions", []) if r.get("bar") == 0]
        if not bars or not bars[0].get("address"):
            raise MachineError(f"controller {ctrl_id}: BAR0 is not mapped (is the function enabled?)")
        self.bar0 = int(bars[0]["address"])

    def _qtest(self) -> QTest:
        # A connection per access: QEMU's qtest socket serves one client at a time, and another
        # injector (or the deadline diagnosis) may need it next.
        assert self.machine.record is not None
        return QTest(self.machine.record.qtest_socket)

    def readl(self, offset: int) -> int:
        if self.via == "host":
            q = self._qtest()
            try:
                return q.readl(self.bar0 + offset)
            finally:
                q.close()
        out = self.machine.ssh.run(f"busybox devmem {self.bar0 + offset:#x} 32", timeout=10, check=True)
        return int(out.stdout.strip(), 16)

    def writel(self, offset: int, value: int) -> None:
        if self.via == "host":
            q = self._qtest()
            try:
                q.writel(self.bar0 + offset, value)
            finally:
                q.close()
        else:
            self.machine.ssh.run(f"busybox devmem {self.bar0 + offset:#x} 32 {value:#x}", timeout=10, check=True)

    def command(self) -> int:
        if self.via == "host":
            q = self._qtest()
            try:
                return q.config_read16(self.bdf, PCI_COMMAND)
            finally:
                q.close()
        return int(self.machine.ssh.run(f"setpci -s {self.bdf} COMMAND", timeout=10, check=True).stdout, 16)

    def set_command(self, value: int) -> None:
        if self.via == "host":
            q = self._qtest()
            try:
                q.config_write16(self.bdf, PCI_COMMAND, value)
            finally:
                q.close()
        else:
            self.machine.ssh.run(f"setpci -s {self.bdf} COMMAND={value:04x}", timeout=10, check=True)


def invalid_doorbell(machine: Machine, ctrl_id: str, kind: str, via: str = "host") -> tuple[int, int]:
    """Ring a doorbell QEMU must reject. Returns the (offset, value) written."""
    if kind not in DOORBELL_KINDS:
        raise MachineError(f"doorbell kind {kind!r}: must be one of {', '.join(DOORBELL_KINDS)}")
    regs = Registers(machine, ctrl_id, via)
    ctrl = regs.ctrl
    missing_qid = (ctrl.max_ioqpairs or 64) + 1  # QEMU's default max_ioqpairs is 64
    aqa = regs.readl(REG_AQA)
    asq_size, acq_size = (aqa & 0xFFF) + 1, ((aqa >> 16) & 0xFFF) + 1
    offset, value = {
        "sq-nonexistent": (DOORBELLS + 8 * missing_qid, 1),
        "cq-nonexistent": (DOORBELLS + 8 * missing_qid + 4, 1),
        "sq-tail-too-big": (DOORBELLS, asq_size + 5),
        "cq-head-too-big": (DOORBELLS + 4, acq_size + 5),
    }[kind]
    regs.writel(offset, value)
    return offset, value


def bus_master(machine: Machine, ctrl_id: str, enable: bool, via: str = "host") -> int:
    """Set or clear PCI Command.BME: without it every DMA and MSI-X of the device fails.
    Returns the command register as it was."""
    regs = Registers(machine, ctrl_id, via)
    before = regs.command()
    regs.set_command(before | PCI_COMMAND_MASTER if enable else before & ~PCI_COMMAND_MASTER)
    return before


def admin_queue(machine: Machine, ctrl_id: str) -> nvme_queues.AdminQueue:
    """The controller's admin queue read from guest memory through qtest (see nvme_queues)."""
    if machine.topology.iommu:
        raise MachineError("behind a vIOMMU the queue addresses are IOVAs: not readable through qtest")
    regs = Registers(machine, ctrl_id, "host")
    if not regs.readl(nvme_queues.REG_CC) & 1:
        raise MachineError("controller disabled (CC.EN=0): no admin queue")
    aqa = regs.readl(REG_AQA)
    sq_size, cq_size = (aqa & 0xFFF) + 1, ((aqa >> 16) & 0xFFF) + 1
    asq, acq = (regs.readl(nvme_queues.REG_ASQ) | regs.readl(nvme_queues.REG_ASQ + 4) << 32,
                regs.readl(nvme_queues.REG_ACQ) | regs.readl(nvme_queues.REG_ACQ + 4) << 32)
    q = regs._qtest()
    try:
        sq, cq = q.read(asq, sq_size * nvme_queues.SQE), q.read(acq, cq_size * nvme_queues.CQE)
    finally:
        q.close()
    return nvme_queues.decode(sq, cq)


def controller_fatal(machine: Machine, ctrl_id: str, via: str = "host") -> bool:
    """CSTS.CFS: the controller declared itself dead."""
    return bool(Registers(machine, ctrl_id, via).readl(REG_CSTS) & CSTS_CFS)


class NvmeTrace:
    """QEMU's NVMe trace events (pci_nvme_*) while the block runs, from QEMU's stderr.

    `with NvmeTrace(machine) as t: ...; t.wait("pci_nvme_enqueue_event", "type 0x0 info 0x1")`
    """

    PATTERN = "pci_nvme_*"

    def __init__(self, machine: Machine):
        self.machine = machine
        self.log = machine.artifacts / "qemu.stderr"
        self._start = 0

    def __enter__(self) -> "NvmeTrace":
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


REG_CC, REG_ASQ, REG_ACQ = 0x14, 0x28, 0x30
CC_ENABLE_4K = 0x00460001  # EN, 4 KiB pages, NVM command set, 64-byte SQ and 16-byte CQ entries


def userspace_admin_command(machine: Machine, ctrl_id: str, ring: int = 0x1000000, via: str = "host",
                            timeout: float = 10) -> None:
    """Do what a userspace driver (SPDK on uio/vfio) does with a controller no kernel driver owns:
    admin queues at guest-physical `ring`, CC.EN, wait for CSTS.RDY, then ring the admin SQ tail
    doorbell for one command. Meant for the bus-master-off case: with BME clear QEMU's fetch of
    the command fails (CSTS.CFS); with BME set it would run whatever the ring holds."""
    regs = Registers(machine, ctrl_id, via)
    regs.writel(REG_CC, 0)
    regs.writel(REG_AQA, 0x001F001F)  # 32-entry admin queues (0-based sizes)
    for reg, addr in ((REG_ASQ, ring), (REG_ACQ, ring + 0x1000)):
        regs.writel(reg, addr & 0xFFFFFFFF)
        regs.writel(reg + 4, addr >> 32)
    regs.writel(REG_CC, CC_ENABLE_4K)
    deadline = time.monotonic() + timeout
    while not regs.readl(REG_CSTS) & 1:
        if time.monotonic() > deadline:
            raise DeadlineError(f"{ctrl_id}: CSTS.RDY not set within {timeout:g} s after CC.EN")
        time.sleep(0.02)
    regs.writel(DOORBELLS, 1)
