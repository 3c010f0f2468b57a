"""A namespace detached from its controller, or attached again, at run time.

QEMU has no monitor command for it: the Namespace Attachment admin command (opcode 15h) is the
only way, and QEMU carries it out only for a namespace of an NVMe subsystem (`nvme_subsys_ns`;
without one it answers Invalid Field). So the command goes from the guest (nvme-cli, on the
controller's own cntlid), as a management tool would send it. QEMU then posts a Notice AER
(Namespace Attribute Changed, Changed Namespace List log page 04h), and the guest's driver, on
that AER alone, rescans: the namespace's block device leaves, or comes back. Both are confirmed:
the AER by QEMU's trace, the block device by the guest."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from orchestrator import guest
from orchestrator.errors import ConfigError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, NS, Kind, Timing, namespace
from orchestrator.faults.timing import Timed
from orchestrator.faults.traces import NvmeTrace

NS_CHANGED = "type 0x2 info 0x0 lid 0x4"  # Notice, Namespace Attribute Changed, log page 04h


def block_device(name: str, nsid: int) -> str:
    """The guest's block device of namespace `nsid` of controller `name` (nvme_core.multipath=N)."""
    return f"{name}n{nsid}"


def _change(m: Injectable, a: Mapping[str, str], t: Timing, attach: bool) -> tuple[str, Timed]:
    ctrl, nsid, _ = namespace(m, a)
    verb = "attach" if attach else "detach"
    if not ctrl.subsystem:
        raise ConfigError(f"ns-{verb} {ctrl.id}: the controller is in no NVMe subsystem (`subsystem` in its "
                          "topology): QEMU attaches and detaches only a subsystem's namespaces")
    name = guest.nvme_state(m.ssh)[ctrl.serial]["name"]
    dev, blk = shlex.quote(f"/dev/{name}"), shlex.quote(f"/dev/{block_device(name, nsid)}")
    timed = t.timed()
    with NvmeTrace(m) as trace:
        timed.delay(f"ns-{verb} {ctrl.id} --ns {nsid}")
        m.ssh.run(f"nvme {verb}-ns {dev} -n {nsid} -c $(cat /sys/class/nvme/{shlex.quote(name)}/cntlid)",
                  timeout=t.timeout, check=True)
        trace.wait("pci_nvme_aer_post_cqe", NS_CHANGED, t.timeout)
    # The driver rescans on the AER alone: wait for what it makes of it, in the guest's own time.
    wanted = f"[ -b {blk} ]" if attach else f"[ ! -e {blk} ]"
    m.ssh.run(f"until {wanted}; do sleep 0.1; done", timeout=t.timeout, check=True)
    return (f"{ctrl.id}: namespace {nsid} {verb}ed (Namespace Attribute Changed AER); the guest's "
            f"{block_device(name, nsid)} {'is back' if attach else 'is gone'}"), timed


def _detach(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    return _change(m, a, t, attach=False)


def _attach(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    return _change(m, a, t, attach=True)


KINDS = (
    Kind("ns-detach", "detach a namespace of a subsystem's controller (Namespace Attachment, sent from the guest): "
         "QEMU posts a Namespace Attribute Changed AER and the guest's block device goes", (CTRL, NS), _detach),
    Kind("ns-attach", "attach a detached namespace again: the same AER, and the guest's block device comes back",
         (CTRL, NS), _attach),
)
