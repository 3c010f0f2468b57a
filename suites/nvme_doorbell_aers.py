"""Invalid NVMe doorbell writes raise Error AERs; a cleared bus master makes the controller fatal.

Seed: SPDK's nvme_doorbell_aers writes invalid doorbell values and expects Error AERs. In CI it
hung: a secondary process closed /dev/uioX, uio_pci_generic's release cleared PCI bus mastering,
QEMU's controller set CSTS.CFS on the next admin command, and the app waited forever.

What the Debian 6.1 kernel nvme driver does with an Error AER (observed here, QEMU 7.2): nothing
in dmesg, no reset, the controller stays `live`; it emits a `change` uevent on the nvme class
device with NVME_AEN=0x01IITT (log page 01h, info II, type TT) and re-arms the AER. It never
reads log page 01h, so QEMU masks further error events until someone does (`nvme error-log`,
rae=0): each case here reads it, as SPDK's test does.

With --spdk-dir, SPDK's own test/nvme/doorbell_aers runs too, on the controller bound to
uio_pci_generic: judged by its "Success:"/"Failure:" lines (it exits 0 after "Failure:") and by
QEMU's trace; a wait for an AER that never comes is interrupted and reported with QEMU's reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import faults, guest, spdk
from orchestrator.engine.session import Run
from orchestrator.errors import DeadlineError
from orchestrator.faults import Hotplug
from orchestrator.machines import Machine

TIMEOUT = 30  # seconds per test under KVM (scaled for TCG)
ADMIN_WAIT = 10  # how long the "app" may wait for an admin completion that never comes
AER_WAIT = 20  # how long SPDK's doorbell_aers may wait for one Error AER before it is interrupted


def ctrl_dev(machine: Machine, ctrl_id: str = "nvme0") -> str:
    state = guest.nvme_state(machine.ssh)[machine.topology.controller(ctrl_id).serial]
    return state["name"]


@pytest.mark.parametrize("via", faults.VIAS)
@pytest.mark.parametrize("kind", list(faults.DOORBELL_KINDS))
def test_invalid_doorbell_posts_error_aer(machine: Machine, kind: str, via: str) -> None:
    """The controller posts an Error AER of the right type/info, seen in QEMU's trace and by the
    guest driver (uevent), and stays usable (I/O to its namespace works)."""
    typ, info = faults.DOORBELL_KINDS[kind]
    name = ctrl_dev(machine)
    watch = guest.UeventWatch(machine.ssh, "nvme")
    try:
        with faults.NvmeTrace(machine) as trace:
            faults.invalid_doorbell(machine, "nvme0", kind, via)
            trace.wait("pci_nvme_enqueue_event", f"type {typ:#x} info {info:#x} lid 0x1")
            trace.wait("pci_nvme_aer_post_cqe", f"type {typ:#x} info {info:#x}")
            if kind.endswith("nonexistent"):
                assert trace.find("pci_nvme_ub_db_wr_invalid_" + kind[:2])
            else:
                assert trace.find("pci_nvme_ub_db_wr_invalid_" + ("sqtail" if kind.startswith("sq") else "cqhead"))
        aen = watch.wait_for("NVME_AEN", f"0x01{info:02x}{typ:02x}")
        assert aen == f"NVME_AEN=0x01{info:02x}{typ:02x}"
    finally:
        watch.close()
    # Linux never reads the error log: read it, or QEMU masks the next error event.
    machine.ssh.run(f"nvme error-log /dev/{name} -e 1", timeout=30, check=True)
    assert machine.ssh.run(f"cat /sys/class/nvme/{name}/state", timeout=10).stdout.strip() == "live"
    assert not faults.controller_fatal(machine, "nvme0", via)
    blk = guest.nvme_state(machine.ssh)[machine.topology.controller("nvme0").serial]["block"][0]
    machine.ssh.run(f"dd if=/dev/urandom of=/dev/{blk} bs=4k count=8 oflag=direct && "
                    f"dd if=/dev/{blk} of=/dev/null bs=4k count=8 iflag=direct", timeout=30, check=True)


@pytest.mark.parametrize("via", faults.VIAS)
def test_bus_master_clear_makes_controller_fatal(fresh_machine: Machine, via: str) -> None:
    """Bus mastering cleared under an enabled controller: the next admin command cannot be fetched
    (DMA fails), QEMU sets CSTS.CFS, and the command never completes; the app waiting for it is
    killed at its deadline and the diagnosis names the controller's fatal status."""
    m = fresh_machine
    name = ctrl_dev(m)
    with faults.NvmeTrace(m) as trace:
        before = faults.bus_master(m, "nvme0", enable=False, via=via)
        assert before & faults.PCI_COMMAND_MASTER
        assert not faults.Registers(m, "nvme0", via).command() & faults.PCI_COMMAND_MASTER
        with pytest.raises(DeadlineError):
            m.ssh.run(f"nvme id-ctrl /dev/{name}", timeout=ADMIN_WAIT)
        cfs = trace.wait("pci_nvme_err_cfs")
        dma = trace.find("pci_nvme_err_addr_read") + trace.find("pci_nvme_err_addr_write")
    assert dma, "no failed DMA in QEMU's trace"
    assert faults.controller_fatal(m, "nvme0", "host" if m.topology.qtest else via)
    print(f"diagnosis: controller fatal status (CSTS.CFS=1); QEMU trace: {dma[0]} / {cfs}")


def test_uio_close_clears_bus_master_and_the_next_admin_command_is_fatal(fresh_machine: Machine) -> None:
    """The CI hang itself: controller on uio_pci_generic, bus mastering on (as SPDK's env sets it),
    a secondary process opens and closes /dev/uioN -> uio's release clears bus mastering; the
    primary's next admin command cannot be fetched and the controller goes fatal."""
    m = fresh_machine
    guest.bind(m.ssh, [Hotplug(m).address("nvme0")], "uio_pci_generic")
    regs = faults.Registers(m, "nvme0", "host")
    regs.set_command(regs.command() | faults.PCI_COMMAND_MASTER)
    m.ssh.run("python3 -c \"import glob; open(sorted(glob.glob('/dev/uio*'))[0], 'rb').close()\"",
              timeout=20, check=True)
    assert not regs.command() & faults.PCI_COMMAND_MASTER, "closing /dev/uioN left bus mastering on"
    with faults.NvmeTrace(m) as trace:
        faults.userspace_admin_command(m, "nvme0")
        cfs = trace.wait("pci_nvme_err_cfs")
        assert trace.find("pci_nvme_err_addr_read"), "no failed SQ entry fetch in QEMU's trace"
    assert faults.controller_fatal(m, "nvme0", "host")
    print(f"diagnosis: controller fatal status (CSTS.CFS=1) after uio close; QEMU trace: {cfs}")


def test_spdk_doorbell_aers(machine: Machine, run: Run, artifacts: Path) -> None:
    """SPDK's own test (test/nvme/doorbell_aers from --spdk-dir) on a controller bound to
    uio_pci_generic: judged by its "Success:" lines, since it exits 0 after "Failure:" too, and
    by QEMU's trace, which must show the three Error AERs posted. An AER that never comes is a
    timeout with QEMU's reason, the app interrupted, never a hang."""
    tree = run.spdk_tree(spdk.DOORBELL_AERS)
    with spdk.claimed(machine.ssh, machine.topology, machine.topology.controller("nvme0")) as bdf, \
            faults.NvmeTrace(machine) as trace:
        run = spdk.doorbell_aers(machine.ssh, tree, bdf, artifacts / "doorbell_aers.log", AER_WAIT)
        why = trace.aer_diagnosis() if run.hung else ""
        posted = trace.error_aers()
    run.check(AER_WAIT, why)
    assert posted == ["0x0", "0x1", "0x1"], f"QEMU posted Error AERs with info {posted}, expected 0x0, 0x1, 0x1"
