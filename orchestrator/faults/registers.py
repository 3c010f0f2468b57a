"""A controller's registers: invalid NVMe doorbell writes, PCI bus-master clear/restore, the admin
queue and fatal status, from the host (qtest socket: lands whatever the guest is doing) or from the
guest (one aligned 32-bit store through /dev/mem with busybox devmem: two 16-bit stores make QEMU
see a tail of 0 and replay stale commands, corrupting the guest's memory: seen on QEMU 7.2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from orchestrator.errors import ConfigError, DeadlineError, MachineError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, Kind, Param, Timing
from orchestrator.faults.timing import Timed
from orchestrator.faults.traces import NvmeTrace
from orchestrator.report import nvme_queues
from orchestrator.vm.qmp import pci_device
from orchestrator.vm.qtest import QTest, mmconfig_base

# NVMe register map (NVMe base spec 3.1); QEMU's doorbell stride is 4 bytes (CAP.DSTRD = 0).
REG_AQA, REG_CSTS, DOORBELLS = 0x24, 0x1C, 0x1000
CSTS_CFS = 1 << 1
PCI_COMMAND, PCI_COMMAND_MASTER, PCI_CAPABILITY_LIST = 0x04, 1 << 2, 0x34
# Invalid doorbell kinds -> the Error AER QEMU posts: (type, info). Type 0 = error status;
# info 0 = write to an invalid doorbell register, 1 = invalid doorbell write value.
DOORBELL_KINDS = {"sq-nonexistent": (0, 0), "cq-nonexistent": (0, 0), "sq-tail-too-big": (0, 1),
                  "cq-head-too-big": (0, 1)}
VIAS = ("host", "guest")


class Registers:
    """BAR0 and config-space access to one controller, from the host (qtest) or the guest."""

    def __init__(self, machine: Injectable, ctrl_id: str, via: str):
        if via not in VIAS:
            raise ConfigError(f"via {via!r}: must be one of {', '.join(VIAS)}")
        if via == "host" and machine.qtest_socket is None:
            raise ConfigError("host-side register access needs a qtest socket: qtest = true in the topology")
        self.machine, self.ctrl, self.via = machine, machine.topology.controller(ctrl_id), via
        dev = pci_device(machine.qmp.execute("query-pci"), ctrl_id)
        if dev is None:
            raise MachineError(f"controller {ctrl_id} is not on the PCI bus")
        self.bdf = f"0000:{dev['bus']:02x}:{dev['slot']:02x}.{dev['function']:x}"
        bars = [r for r in dev.get("regions", []) if r.get("bar") == 0]
        if not bars or not bars[0].get("address"):
            raise MachineError(f"controller {ctrl_id}: BAR0 is not mapped (is the function enabled?)")
        self.bar0 = int(bars[0]["address"])
        self.mcfg = mmconfig_base(machine.qmp.execute) if via == "host" else None

    def qtest(self) -> QTest:
        """A connection of its own (`with regs.qtest() as q:`): QEMU's qtest socket serves one
        client at a time, and another injector (or the deadline diagnosis) may need it next."""
        assert self.machine.qtest_socket is not None
        return QTest(self.machine.qtest_socket, lost=self.machine.lost)

    def _guest(self, cmd: str) -> str:
        return self.machine.ssh.run(cmd, timeout=10, check=True).stdout

    def readl(self, offset: int) -> int:
        if self.via == "host":
            with self.qtest() as q:
                return q.readl(self.bar0 + offset)
        return int(self._guest(f"busybox devmem {self.bar0 + offset:#x} 32").strip(), 16)

    def writel(self, offset: int, value: int) -> None:
        if self.via == "host":
            with self.qtest() as q:
                q.writel(self.bar0 + offset, value)
        else:
            self._guest(f"busybox devmem {self.bar0 + offset:#x} 32 {value:#x}")

    def config16(self, offset: int) -> int:
        """A 16-bit config space register."""
        if self.via == "host":
            with self.qtest() as q:
                return q.config_read16(self.bdf, offset, self.mcfg)
        return int(self._guest(f"setpci -s {self.bdf} {offset:#x}.w"), 16)

    def set_config16(self, offset: int, value: int) -> None:
        if self.via == "host":
            with self.qtest() as q:
                q.config_write16(self.bdf, offset, value, self.mcfg)
        else:
            self._guest(f"setpci -s {self.bdf} {offset:#x}.w={value:04x}")

    def command(self) -> int:
        return self.config16(PCI_COMMAND)

    def set_command(self, value: int) -> None:
        self.set_config16(PCI_COMMAND, value)

    def capability(self, cap_id: int) -> int:
        """The config space offset of capability `cap_id` (the PCI list from 34h)."""
        at, seen = self.config16(PCI_CAPABILITY_LIST) & 0xFC, 0
        while at and seen < 48:  # the list cannot be longer; a loop in it is the device's bug
            header = self.config16(at)
            if header & 0xFF == cap_id:
                return at
            at, seen = (header >> 8) & 0xFC, seen + 1
        raise MachineError(f"controller {self.ctrl.id}: no PCI capability {cap_id:#04x}")


def invalid_doorbell(machine: Injectable, ctrl_id: str, kind: str, via: str = "host") -> tuple[int, int]:
    """Ring a doorbell QEMU must reject. Returns the (offset, value) written."""
    if kind not in DOORBELL_KINDS:
        raise ConfigError(f"doorbell kind {kind!r}: must be one of {', '.join(DOORBELL_KINDS)}")
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


def bus_master(machine: Injectable, ctrl_id: str, enable: bool, via: str = "host") -> int:
    """Set or clear PCI Command.BME: without it every DMA and MSI-X of the device fails.
    Returns the command register as it was."""
    regs = Registers(machine, ctrl_id, via)
    before = regs.command()
    regs.set_command(before | PCI_COMMAND_MASTER if enable else before & ~PCI_COMMAND_MASTER)
    return before


def admin_queue(machine: Injectable, ctrl_id: str) -> nvme_queues.AdminQueue:
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
    with regs.qtest() as q:
        sq, cq = q.read(asq, sq_size * nvme_queues.SQE), q.read(acq, cq_size * nvme_queues.CQE)
    return nvme_queues.decode(sq, cq)


def controller_fatal(machine: Injectable, ctrl_id: str, via: str = "host") -> bool:
    """CSTS.CFS: the controller declared itself dead."""
    return bool(Registers(machine, ctrl_id, via).readl(REG_CSTS) & CSTS_CFS)


REG_CC, REG_ASQ, REG_ACQ = 0x14, 0x28, 0x30
CC_ENABLE_4K = 0x00460001  # EN, 4 KiB pages, NVM command set, 64-byte SQ and 16-byte CQ entries


def userspace_admin_command(machine: Injectable, ctrl_id: str, ring: int = 0x1000000, via: str = "host",
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


# The trace lines a register fault is about, not the I/O chatter around it.
_TELLING = ("pci_nvme_ub_", "pci_nvme_err", "pci_nvme_aer", "pci_nvme_enqueue_event")


def _traced(m: Injectable, t: Timing, what: str, act: Callable[[NvmeTrace], str]) -> tuple[str, Timed]:
    """`act` under QEMU's NVMe trace, after the seeded delay: what it did, and what QEMU traced."""
    timed = t.timed()
    with NvmeTrace(m) as trace:
        timed.delay(what)
        said = act(trace)
        lines = [ln for ln in trace.lines() if ln.startswith(_TELLING)]
    return "\n".join([said, *(f"  trace: {ln}" for ln in lines)]), timed


def _doorbell(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    def act(trace: NvmeTrace) -> str:
        offset, value = invalid_doorbell(m, a["ctrl"], a["kind"], a["via"])
        typ, info = DOORBELL_KINDS[a["kind"]]
        trace.wait("pci_nvme_enqueue_event", f"type {typ:#x} info {info:#x}", t.timeout)  # QEMU took it as invalid
        return f"{a['ctrl']}: wrote {value:#x} to BAR0+{offset:#x} ({a['kind']}, from the {a['via']})"
    return _traced(m, t, f"doorbell {a['ctrl']} {a['kind']}", act)


def _bus_master(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    def act(trace: NvmeTrace) -> str:
        before = bus_master(m, a["ctrl"], a["state"] == "on", a["via"])
        return f"{a['ctrl']}: PCI command {before:#06x} -> bus master {a['state']} (from the {a['via']})"
    return _traced(m, t, f"bus-master {a['ctrl']} {a['state']}", act)


_VIA = Param("via", "qtest socket (host) or /dev/mem (guest)", VIAS, "host")
KINDS = (
    Kind("doorbell", "an invalid doorbell write, which QEMU must answer with an Error AER",
         (CTRL, Param("kind", "which invalid write", tuple(DOORBELL_KINDS)), _VIA), _doorbell),
    Kind("bus-master", "clear or restore PCI bus mastering (no DMA, no MSI-X while off)",
         (CTRL, Param("state", "off or on", ("off", "on")), _VIA), _bus_master),
)
