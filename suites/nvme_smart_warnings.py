"""SMART critical warnings raised at run time from the device side (the `smart-warning` fault:
QEMU's `smart_critical_warning`, faults/smart.py), and who hears of them.

QEMU posts a SMART / Health AER for a newly set bit only to a host that enabled that event with
Set Features (Asynchronous Event Configuration). Linux 6.1 enables only the notice events
(namespace attributes, firmware activation, ANA, discovery), so the guest's kernel hears
nothing: the warning is in the SMART log for whoever reads it. SPDK's driver enables every
SMART event, and its own test/nvme/aer app, waiting for an AER (in its namespace-notice mode,
`-n`, it waits for any AER whose log page it then reads), gets the warning as QEMU posts it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from orchestrator import faults, guest, spdk
from orchestrator.engine.fixtures import Faults
from orchestrator.engine.session import Run
from orchestrator.machines import Machine

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
CTRL = "nvme0"
AER_APP = "test/nvme/aer/aer"
AER_WAIT = 30  # seconds for SPDK's aer app to be ready, and to end once its AER came
SMART_AER = "type 0x1 info 0x2"  # SMART / Health, Available Spare below threshold (QEMU's trace words)


def critical_warning(machine: Machine, name: str) -> int:
    """The Critical Warning byte of the SMART log, as the guest reads it (nvme-cli)."""
    log = machine.ssh.run(f"nvme smart-log -o json /dev/{name}", timeout=30, check=True)
    return int(json.loads(log.stdout)["critical_warning"])


def test_the_warning_is_in_the_smart_log_and_linux_gets_no_aer(machine: Machine, inject: Faults) -> None:
    """Bits add up in the guest's SMART log and `none` clears them; QEMU posts no SMART event to
    Linux, which did not enable one."""
    name = guest.nvme_state(machine.ssh)[machine.topology.controller(CTRL).serial]["name"]
    try:
        with faults.NvmeTrace(machine) as trace:
            assert inject(machine, f"smart-warning {CTRL} spare") == f"{CTRL}: SMART critical warning 0x00 -> 0x01"
            assert inject(machine, f"smart-warning {CTRL} temperature").endswith("-> 0x03")
            assert critical_warning(machine, name) == 0x03
            assert not trace.find("pci_nvme_enqueue_event", "type 0x1 "), trace.lines()
    finally:
        inject(machine, f"smart-warning {CTRL} none")
    assert critical_warning(machine, name) == 0


def test_spdk_aer_app_gets_the_smart_aer(machine: Machine, inject: Faults, run: Run, artifacts: Path) -> None:
    """SPDK's test/nvme/aer (from --spdk-dir), on nvme0 bound as SPDK's setup.sh binds it: ready
    (its touch file), it gets the SMART / Health AER of Available Spare below threshold that the
    host's fault made QEMU post, reads the health log page and ends: exit 0, SPDK's own words."""
    tree = run.spdk_tree(AER_APP)
    ready = "/tmp/tbctl-spdk-aer-ready"
    machine.ssh.run(f"rm -f {ready}", timeout=10, check=True)
    res = None
    with spdk.claimed(machine.ssh, machine.topology, machine.topology.controller(CTRL)) as bdf:
        app = machine.ssh.start(spdk.command(tree, AER_APP, ["-n", "2", "-t", ready, "-r",
                                                             f"trtype:PCIe traddr:{bdf}"]),
                                timeout=AER_WAIT * 3, label="SPDK aer")
        try:
            machine.ssh.run(f"until [ -e {shlex.quote(ready)} ]; do sleep 0.1; done", timeout=AER_WAIT, check=True)
            with faults.NvmeTrace(machine) as trace:
                inject(machine, f"smart-warning {CTRL} spare")
                trace.wait("pci_nvme_aer_post_cqe", SMART_AER)
            res = app.wait(AER_WAIT)
            (artifacts / "aer.log").write_text(res.stdout + res.stderr)
        finally:
            if res is None:  # it never ended on its own: what it printed is logged as it is killed
                app.kill()
            inject(machine, f"smart-warning {CTRL} none")
    assert res.rc == 0 and "aer_cb for log page 2, aen_event_type: 0x01, aen_event_info: 0x02" in res.stdout, res
