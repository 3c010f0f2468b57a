"""A controller reset or a PCIe Function Level Reset, from either side of the driver.

From the guest, the driver's own: a controller reset through sysfs (`reset_controller`: the nvme
driver disables and re-enables its controller), or an FLR by the PCI core (`reset` with the
`flr` method), the driver told before and after; its I/O waits and goes on. From the host
(qtest), behind the driver's back: CC.EN cleared, or Initiate Function Level Reset set in the
PCIe Device Control register (QEMU resets the whole function); the driver learns of it only when
its commands time out. Each is confirmed by QEMU's NVMe trace: the controller stopped
(pci_nvme_mmio_stopped) or the function reset (pci_nvme_pci_reset), and from the guest, started
again (pci_nvme_mmio_start_success)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from orchestrator import guest
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, Kind, Param, Timing
from orchestrator.faults.registers import REG_CC, VIAS, Registers
from orchestrator.faults.timing import Timed
from orchestrator.faults.traces import NvmeTrace

PCI_CAP_ID_EXP, PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR = 0x10, 0x08, 1 << 15
HOWS = {"controller": "pci_nvme_mmio_stopped", "flr": "pci_nvme_pci_reset"}  # what QEMU traces for each
STARTED = "pci_nvme_mmio_start_success"


def _from_guest(m: Injectable, ctrl_id: str, how: str, timeout: float) -> str:
    state = guest.nvme_state(m.ssh)[m.topology.controller(ctrl_id).serial]
    if how == "controller":
        m.ssh.run(f"echo 1 > /sys/class/nvme/{shlex.quote(state['name'])}/reset_controller", timeout=timeout,
                  check=True)
        return f"the driver reset controller {state['name']}"
    dev = f"/sys/bus/pci/devices/{shlex.quote(state['address'])}"
    m.ssh.run(f"was=$(cat {dev}/reset_method) && echo flr > {dev}/reset_method && echo 1 > {dev}/reset; rc=$?; "
              f"echo \"$was\" > {dev}/reset_method; exit $rc", timeout=timeout, check=True)
    return f"the PCI core reset function {state['address']} (FLR), its driver told"


def _from_host(m: Injectable, ctrl_id: str, how: str) -> str:
    regs = Registers(m, ctrl_id, "host")
    if how == "controller":
        cc = regs.readl(REG_CC)
        regs.writel(REG_CC, cc & ~1)
        return f"CC {cc:#010x} -> EN cleared behind the driver's back"
    devctl = regs.capability(PCI_CAP_ID_EXP) + PCI_EXP_DEVCTL
    regs.set_config16(devctl, regs.config16(devctl) | PCI_EXP_DEVCTL_BCR_FLR)
    return f"Function Level Reset of {regs.bdf} behind the driver's back"


def _reset(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    ctrl, how, via = a["ctrl"], a["how"], a["via"]
    m.topology.controller(ctrl)
    timed = t.timed()
    with NvmeTrace(m) as trace:
        timed.delay(f"reset {ctrl} {how} ({via})")
        said = _from_guest(m, ctrl, how, t.timeout) if via == "guest" else _from_host(m, ctrl, how)
        trace.wait(HOWS[how], "", t.timeout)
        if via == "guest":
            trace.wait(STARTED, "", t.timeout)
    return f"{ctrl}: {said}", timed


KINDS = (
    Kind("reset", "reset a controller (CC.EN) or its PCI function (FLR): from the guest, the driver's own "
         "(sysfs), from the host (qtest), behind the driver's back",
         (CTRL, Param("how", "a controller reset or a Function Level Reset", tuple(HOWS)),
          Param("via", "host (qtest, behind the driver) or guest (the driver's own)", VIAS, "host")), _reset),
)
