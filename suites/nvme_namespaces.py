"""A subsystem's namespace detached and attached again at run time (the `ns-detach` and
`ns-attach` faults, faults/namespace.py), and what the guest's kernel makes of each.

The controller is in an NVMe subsystem (QEMU attaches and detaches only a subsystem's
namespaces), with two namespaces. The Namespace Attachment command goes to QEMU from the guest;
QEMU's Namespace Attribute Changed AER is all the driver is told, and on it alone the
namespace's block device must go, the other namespace stay, and an attached one come back
readable. A reader in the middle of a namespace that is detached gets an error, not a hang: QEMU
answers its next read Invalid Field in Command (sct 0, sc 2h: `nvme_io_cmd` finds no namespace
of that id), which the kernel turns into EOPNOTSUPP, "Operation not supported" (seen, 7.2).
"""

from __future__ import annotations

import pytest

from orchestrator import guest
from orchestrator.config.topology import Controller, Namespace
from orchestrator.engine.fixtures import Faults
from orchestrator.faults.namespace import block_device
from orchestrator.guest import load
from orchestrator.machines import Machine

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
READER_WAIT = 60  # seconds for a reader to be under way, and to end once its namespace is gone
# Its own machine shape: one controller in a subsystem, a small namespace and a larger one that
# a whole-namespace read is still reading when it is detached.
SUBSYSTEM = Controller("nvme0", "TBCTLNS01", hotplug=False, subsystem="subsys0",
                       namespaces=(Namespace(size_mib=64), Namespace(size_mib=256)))
pytestmark = pytest.mark.tb_machine(controllers=(SUBSYSTEM,))


def devices(machine: Machine) -> tuple[str, str]:
    """The guest's block devices of namespaces 1 and 2."""
    name = guest.nvme_state(machine.ssh)[SUBSYSTEM.serial]["name"]
    return block_device(name, 1), block_device(name, 2)


def read_one_block(machine: Machine, dev: str) -> int:
    return machine.ssh.run(f"dd if=/dev/{dev} of=/dev/null bs=4096 count=1 iflag=direct", timeout=30).rc


def test_a_detached_namespace_leaves_the_guest_and_comes_back_attached(machine: Machine, inject: Faults) -> None:
    ns1, ns2 = devices(machine)
    assert inject(machine, "ns-detach nvme0 --ns 2") == (
        f"nvme0: namespace 2 detached (Namespace Attribute Changed AER); the guest's {ns2} is gone")
    assert read_one_block(machine, ns1) == 0  # the other namespace stays
    assert inject(machine, "ns-attach nvme0 --ns 2") == (
        f"nvme0: namespace 2 attached (Namespace Attribute Changed AER); the guest's {ns2} is back")
    assert read_one_block(machine, ns2) == 0


def test_a_reader_of_a_detached_namespace_gets_an_error(fresh_machine: Machine, inject: Faults) -> None:
    m = fresh_machine
    _, ns2 = devices(m)
    dd = m.ssh.start(f"exec dd if=/dev/{ns2} of=/dev/null bs=4096 iflag=direct", timeout=READER_WAIT * 3,
                     label=f"dd from {ns2}")
    load.wait_io(m.ssh, dd, ns2, READER_WAIT)
    inject(m, "ns-detach nvme0 --ns 2")
    done = dd.wait(READER_WAIT)
    assert done.rc == 1 and f"error reading '/dev/{ns2}': Operation not supported" in done.stderr, done
