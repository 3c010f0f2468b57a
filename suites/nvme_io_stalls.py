"""A namespace's command held in QEMU (the `io-stall` fault: a blkdebug breakpoint under its drive,
faults/stall.py), and what the guest sees: one read that takes the hold's time and then completes,
the reads around it unaffected. A hold the guest kernel's I/O timeout would end with a controller
reset is refused: QEMU's reset would wait for the held command and hang.

With --spdk-dir, SPDK's own spdk_nvme_perf reads through its polled userspace driver (which has
no I/O timeout unless asked): its one held read completes after the hold, and its latency shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator import guest, spdk
from orchestrator.engine.fixtures import Faults
from orchestrator.engine.session import Run
from orchestrator.errors import ConfigError
from orchestrator.machines import Machine

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
HOLD = 3.0  # seconds, well below the kernel's default I/O timeout (30 s)
PID = "/tmp/tbctl-reads.pid"
LOG = "/tmp/tbctl-reads.log"
PERF = "build/bin/spdk_nvme_perf"
PERF_SECONDS = 8  # perf's own run (-t): the hold falls inside it
_PERF_ROW = re.compile(r"^PCIE \(\S+\) NSID 1 from core +\d+: +(?:[\d.]+ +){3}[\d.]+ +([\d.]+)\s*$", re.M)


def disk(machine: Machine) -> str:
    return str(guest.nvme_state(machine.ssh)[machine.topology.controller("nvme0").serial]["block"][0])


def test_a_held_read_takes_the_holds_time_and_completes(machine: Machine, inject: Faults) -> None:
    """One direct read after another, each timed in the guest: the one the break caught took the
    hold's time; every read succeeded."""
    dev = disk(machine)
    machine.ssh.run(f"rm -f {LOG}; nohup sh -c 'echo $$ > {PID}; while :; do s=$(date +%s.%N); dd if=/dev/{dev} "
                    f"of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; r=$?; echo \"$s $(date +%s.%N) $r\"; "
                    f"done' > {LOG} 2>&1 &", timeout=10, check=True)
    try:
        said = inject(machine, f"io-stall nvme0 {HOLD:g}")
    finally:
        machine.ssh.run(f"kill $(cat {PID})", timeout=10)
    assert said == f"nvme0 namespace 1: the first read to come was held until {HOLD:g} s after the break, then let go"
    reads = [line.split() for line in machine.ssh.run(f"cat {LOG}", timeout=10, check=True).stdout.splitlines()]
    took = [float(end) - float(start) for start, end, _ in reads]
    assert all(rc == "0" for *_, rc in reads), reads
    slow = [t for t in took if t >= HOLD * 0.5]
    assert len(slow) == 1 and slow[0] <= HOLD + 2, took  # the break catches one command; the others were quick


def test_a_hold_the_guests_timeout_would_cut_short_is_refused(machine: Machine, inject: Faults) -> None:
    dev = disk(machine)
    was = machine.ssh.run(f"cat /sys/block/{dev}/queue/io_timeout", timeout=10, check=True).stdout.strip()
    machine.ssh.run(f"echo 2000 > /sys/block/{dev}/queue/io_timeout", timeout=10, check=True)
    try:
        with pytest.raises(ConfigError, match=rf"^io-stall of 5 s: {dev}'s I/O timeout is 2 s; the guest would reset "
                                              "the controller while QEMU holds the command"):
            inject(machine, "io-stall nvme0 5")
    finally:
        machine.ssh.run(f"echo {was} > /sys/block/{dev}/queue/io_timeout", timeout=10, check=True)


def test_spdk_perf_waits_out_the_hold(machine: Machine, inject: Faults, run: Run, artifacts: Path) -> None:
    """SPDK's spdk_nvme_perf (from --spdk-dir), one read at a time on nvme0 bound as SPDK's setup.sh
    binds it: the read the break caught completes once let go, perf ends without an error, and its
    maximum latency is the hold's."""
    tree = run.spdk_tree(PERF)
    with spdk.claimed(machine.ssh, machine.topology, machine.topology.controller("nvme0")) as bdf, \
            spdk.running(machine.ssh, tree, PERF, ["-q", "1", "-o", "4096", "-w", "randread", "-t", str(PERF_SECONDS),
                                                   "-r", f"trtype:PCIe traddr:{bdf}"],
                         "Launching workers", PERF_SECONDS * 6) as perf:
        inject(machine, f"io-stall nvme0 {HOLD:g}")
        res = perf.wait(PERF_SECONDS * 3)
    (artifacts / "spdk_nvme_perf.log").write_text(res.stdout + res.stderr)
    row = _PERF_ROW.search(res.stdout)
    assert res.rc == 0 and row, f"spdk_nvme_perf: expected exit 0 and its latency row, got {res.ended}:\n{res.tail()}"
    assert HOLD * 1e6 * 0.9 <= float(row[1]) <= (HOLD + 3) * 1e6, row[0]
