"""Controller resets and Function Level Resets under I/O (the `reset` fault, faults/reset.py),
from the driver's side and behind its back, and what the guest's kernel does with each.

The driver's own (sysfs, from the guest): its I/O waits through the reset and completes. Behind
its back (qtest, from the host), the driver learns of it when a command times out (the test sets
the namespace's I/O timeout to IO_TIMEOUT): after an FLR the function has lost its configuration,
so the driver's reset finds it not ready and removes the controller, and the reader gets EIO; after
CC.EN was cleared, the driver aborts and resets, and the command it requeues times out again
after every reset (a known failure, its cause not yet found).

With --spdk-dir, SPDK's bdevperf reads and writes the controller through bdev_nvme, with an I/O
timeout whose action is a reset (bdev_nvme_set_options, as SPDK's users set it for a controller
that may stop answering), going on after a failed I/O as SPDK's failover.sh runs it: CC.EN
cleared behind its back, its commands time out, bdev_nvme resets the controller, and its I/O goes
on. The commands in flight when the controller stopped fail: SPDK's reset aborts them "by
request" with Do Not Retry, which bdev_nvme does not retry (by design: SPDK's own failover
tests run bdevperf with -f for it).
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator import guest, spdk
from orchestrator.engine.fixtures import Faults
from orchestrator.engine.session import Run
from orchestrator.errors import DeadlineError
from orchestrator.guest import load
from orchestrator.guest.ssh import RemoteProcess
from orchestrator.machines import Machine
from orchestrator.spdk.bdevperf import BDEVPERF, Bdevperf

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
IO_TIMEOUT_MS = 5000  # the namespace's I/O timeout here (the kernel's default is 30 s)
READER_WAIT = 60  # seconds for a reader to end after a reset
STUCK_WAIT = 30  # seconds a reader is given after CC.EN was cleared: a few of the driver's timeouts
BDEVPERF_SECONDS = 30  # bdevperf's run: the fault, the timeout and the reset fall inside it
SPDK_IO_TIMEOUT_US = 3_000_000  # bdev_nvme's I/O timeout (timeout_us), whose action is a reset
RESET_DONE = 30  # seconds for bdev_nvme to end its reset once I/O goes on again


def reader(machine: Machine, ctrl_id: str) -> tuple[RemoteProcess, str]:
    """Direct reads of the whole of the controller's namespace, under way (in flight when the
    fault lands), and how dd reports them all read."""
    ctrl = machine.topology.controller(ctrl_id)
    disk = guest.nvme_state(machine.ssh)[ctrl.serial]["block"][0]
    machine.ssh.run(f"echo {IO_TIMEOUT_MS} > /sys/block/{disk}/queue/io_timeout", timeout=10, check=True)
    proc = machine.ssh.start(f"exec dd if=/dev/{disk} of=/dev/null bs=4096 iflag=direct",
                             timeout=READER_WAIT * 3, label=f"dd from {disk}")
    load.wait_io(machine.ssh, proc, disk, READER_WAIT)
    return proc, f"{ctrl.namespaces[0].size_mib << 20} bytes"


def test_the_drivers_own_controller_reset_waits_for_its_io(machine: Machine, inject: Faults) -> None:
    dd, everything = reader(machine, "nvme0")
    name = guest.nvme_state(machine.ssh)[machine.topology.controller("nvme0").serial]["name"]
    assert inject(machine, "reset nvme0 controller --via guest") == f"nvme0: the driver reset controller {name}"
    done = dd.wait(READER_WAIT)
    assert done.rc == 0 and everything in done.stderr, done


def test_the_drivers_own_flr_waits_for_its_io(machine: Machine, inject: Faults) -> None:
    dd, everything = reader(machine, "nvme0")
    assert "(FLR), its driver told" in inject(machine, "reset nvme0 flr --via guest")
    done = dd.wait(READER_WAIT)
    assert done.rc == 0 and everything in done.stderr, done


def test_a_flr_behind_the_drivers_back_fails_its_io_and_removes_the_controller(fresh_machine: Machine,
                                                                               inject: Faults) -> None:
    m = fresh_machine  # the controller is gone from it afterwards
    dd, _ = reader(m, "nvme1")
    inject(m, "reset nvme1 flr")
    done = dd.wait(READER_WAIT)
    assert done.rc != 0 and "Input/output error" in done.stderr, done
    log = "\n".join(guest.kernel_log(m.ssh))
    assert re.search(r"nvme nvme\d: I/O \d+ QID \d+ timeout, reset controller", log), log[-3000:]
    assert re.search(r"nvme nvme\d: Device not ready; aborting initialisation, CSTS=0x0", log), log[-3000:]
    assert re.search(r"nvme nvme\d: Removing after probe failure status: -19", log), log[-3000:]


def test_a_controller_disabled_behind_the_drivers_back_is_reset_and_its_io_completes(fresh_machine: Machine,
                                                                                     inject: Faults) -> None:
    m = fresh_machine  # its reader may never end
    dd, everything = reader(m, "nvme1")
    inject(m, "reset nvme1 controller")
    try:
        done = dd.wait(STUCK_WAIT)
    except DeadlineError:
        log = "\n".join(guest.kernel_log(m.ssh))
        resets = re.findall(r"nvme nvme\d: I/O (\d+) QID \d+ timeout, reset controller", log)
        raise AssertionError(f"the reader still waits {STUCK_WAIT} s after CC.EN was cleared: the driver reset the "
                             f"controller {len(resets)} times, and its I/O timed out again after each (tags "
                             f"{', '.join(sorted(set(resets), key=int))})\n{log[-3000:]}") from None
    assert done.rc == 0 and everything in done.stderr, done


def test_spdk_bdev_nvme_resets_a_controller_disabled_behind_its_back(fresh_machine: Machine, inject: Faults,
                                                                     run: Run, artifacts: Path) -> None:
    m = fresh_machine  # a controller SPDK could not bring back is not handed on
    tree = run.spdk_tree(BDEVPERF)
    result, log = None, ""
    with spdk.claimed(m.ssh, m.topology, m.topology.controller("nvme1")) as bdf:
        perf = Bdevperf(m.ssh, tree, m.run_dir, BDEVPERF_SECONDS,
                        {"timeout_us": SPDK_IO_TIMEOUT_US, "action_on_timeout": "reset"}, go_on=True)
        try:
            perf.attach(trtype="PCIe", traddr=bdf)
            perf.start()
            perf.wait_io(60)
            inject(m, "reset nvme1 controller")
            perf.wait_io(SPDK_IO_TIMEOUT_US / 1e6 + 30)  # nothing completes until bdev_nvme has reset it
            # I/O goes on from the moment each channel has its new qpair; bdev_nvme says "enabled" only
            # after its pass over every channel has completed their pending resets, later (seen "resetting")
            perf.wait_state(("enabled",), RESET_DONE)
            result = perf.finish()
        finally:
            perf.close()
            log = perf.proc.output()
            (artifacts / "bdevperf.log").write_text(log)
    assert "Warning: Detected a timeout." in log, log[-3000:]
    assert "Resetting controller successful." in log and "Resetting controller failed." not in log, log[-3000:]
    jobs = result["results"]
    assert [j["status"] for j in jobs] == ["finished"], jobs
    aborted = re.findall(r"ABORTED - BY REQUEST \(00/07\) qid:1 cid:\d+ cdw0:0 sqhd:\w+ p:\d m:\d dnr:1", log)
    assert 0 < len(aborted) <= jobs[0]["io_failed"], f"{len(aborted)} aborted by request with DNR; {jobs}"
