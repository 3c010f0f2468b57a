"""Media errors made on the device side (the `media-error` fault: blkdebug under the namespace's
drive, faults/media.py), and what the guest's kernel does with them.

QEMU completes a failed read as Unrecovered Read Error and a failed write as Write Fault, both
without DNR. The kernel's nvme driver retries such a command (up to nvme_core.max_retries, 5),
then fails the request as a medium error: the reader gets ENODATA ("No data available", the
block layer's errno for BLK_STS_MEDIUM) and the kernel logs the block ("critical medium error,
dev nvme0n1, sector S op 0x0:(READ)"). A passthrough command (nvme-cli)
is never retried, so a block that fails once shows there, and a retry of the same read gets it.

With --spdk-dir, SPDK's own spdk_nvme_perf reads the namespace in its polled userspace driver:
it gets the status as QEMU completes it (SPDK retries no media error) and fails its run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import guest, spdk
from orchestrator.engine.fixtures import Faults
from orchestrator.engine.session import Run
from orchestrator.guest.ssh import Result
from orchestrator.machines import Machine

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
CTRL = "nvme0"
IO_TIMEOUT = 60  # a command with its retries
PERF = "build/bin/spdk_nvme_perf"


@pytest.fixture
def disk(machine: Machine, inject: Faults) -> Iterator[tuple[str, int]]:
    """nvme0's namespace in the guest (its block device, its block size), its media errors
    cleared after the test, whatever the test did."""
    state = guest.nvme_state(machine.ssh)[machine.topology.controller(CTRL).serial]
    try:
        yield state["block"][0], machine.topology.controller(CTRL).namespaces[0].block_size
    finally:
        inject(machine, f"media-clear {CTRL}")


def dd(machine: Machine, dev: str, bs: int, lba: int, write: bool = False) -> Result:
    """One block of `dev` read (or written) at `lba`, past the page cache."""
    io = f"if=/dev/zero of=/dev/{dev} seek={lba} oflag=direct" if write else \
        f"if=/dev/{dev} of=/dev/null skip={lba} iflag=direct"
    return machine.ssh.run(f"dd {io} bs={bs} count=1", timeout=IO_TIMEOUT)


def test_a_read_error_reaches_the_reader_with_its_block(machine: Machine, inject: Faults,
                                                        disk: tuple[str, int]) -> None:
    """Reads of LBA 8-15 fail with ENODATA and the kernel names the sector; the blocks around them,
    and writes to them, still work; media-clear makes them readable again."""
    dev, bs = disk
    before = len(guest.kernel_log(machine.ssh))
    said = inject(machine, f"media-error {CTRL} --lba 8-15 --op read")
    assert said == f"{CTRL} namespace 1: read of LBA 8-15 ({bs}-byte blocks) fail always with Unrecovered Read Error"
    failed = dd(machine, dev, bs, 8)
    assert failed.rc != 0 and "No data available" in failed.stderr, failed
    assert dd(machine, dev, bs, 7).rc == 0 and dd(machine, dev, bs, 16).rc == 0
    assert dd(machine, dev, bs, 15).rc != 0
    assert dd(machine, dev, bs, 8, write=True).rc == 0  # reads only
    log = guest.kernel_log(machine.ssh, before)
    sector = 8 * bs // 512
    assert any(re.search(rf"critical medium error, dev {dev}, sector {sector} op 0x0:\(READ\)", line) for line in log), log
    inject(machine, f"media-clear {CTRL}")
    assert dd(machine, dev, bs, 8).rc == 0


def test_a_write_fault_reaches_the_writer(machine: Machine, inject: Faults, disk: tuple[str, int]) -> None:
    dev, bs = disk
    before = len(guest.kernel_log(machine.ssh))
    inject(machine, f"media-error {CTRL} --lba 32 --op write")
    failed = dd(machine, dev, bs, 32, write=True)
    assert failed.rc != 0 and "No data available" in failed.stderr, failed
    assert dd(machine, dev, bs, 32).rc == 0  # writes only
    log = guest.kernel_log(machine.ssh, before)
    sector = 32 * bs // 512
    assert any(re.search(rf"critical medium error, dev {dev}, sector {sector} op 0x1:\(WRITE\)", line) for line in log), log


def test_a_block_that_fails_once_shows_to_a_command_no_one_retries(machine: Machine, inject: Faults,
                                                                   disk: tuple[str, int]) -> None:
    """`--times once`: nvme-cli's read (a passthrough command: the kernel does not retry it)
    gets the status once, Unrecovered Read Error (0x281); the same read then succeeds, as it
    does on a device that recovered the block."""
    dev, bs = disk
    inject(machine, f"media-error {CTRL} --lba 64 --times once")
    read = f"nvme read /dev/{dev} --start-block=64 --block-count=0 --data-size={bs} --data=/dev/null"
    first = machine.ssh.run(read, timeout=IO_TIMEOUT)
    assert first.rc != 0 and "0x281" in first.stdout + first.stderr, first
    again = machine.ssh.run(read, timeout=IO_TIMEOUT)
    assert again.rc == 0, again


def test_spdk_perf_gets_the_read_error(machine: Machine, inject: Faults, disk: tuple[str, int], run: Run,
                                       artifacts: Path) -> None:
    """SPDK's spdk_nvme_perf (from --spdk-dir), reading nvme0 sequentially from LBA 0 through
    its own driver on the controller bound as SPDK's setup.sh binds it, gets Unrecovered Read
    Error (sct 2, sc 0x81 = 129) for LBA 0-7 and ends its run failed ("errors occurred")."""
    tree = run.spdk_tree(PERF)
    inject(machine, f"media-error {CTRL} --lba 0-7 --op read")
    with spdk.claimed(machine.ssh, machine.topology, machine.topology.controller(CTRL)) as bdf:
        res = machine.ssh.run(spdk.command(tree, PERF, ["-q", "1", "-o", str(8 * disk[1]), "-w", "read", "-t", "3",
                                                        "-r", f"trtype:PCIe traddr:{bdf}"]), timeout=IO_TIMEOUT)
        (artifacts / "spdk_nvme_perf.log").write_text(res.stdout + res.stderr)
    out = res.stdout + res.stderr
    assert res.rc == 1 and "Read completed with error (sct=2, sc=129)" in out and "errors occurred" in out, res
