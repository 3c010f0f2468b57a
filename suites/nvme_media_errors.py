"""Media errors made on the device side (the `media-error` fault: blkdebug under the namespace's
drive, faults/media.py), and what the guest's kernel does with them.

QEMU completes a failed read as Unrecovered Read Error and a failed write as Write Fault, both
without DNR. The kernel's nvme driver retries such a command (up to nvme_core.max_retries, 5),
then fails the request as a medium error: the reader gets ENODATA ("No data available", the
block layer's errno for BLK_STS_MEDIUM) and the kernel logs the block ("critical medium error,
dev nvme0n1, sector S op 0x0:(READ)"). A passthrough command (nvme-cli)
is never retried, so a block that fails once shows there, and a retry of the same read gets it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from orchestrator import guest
from orchestrator.engine.fixtures import Faults
from orchestrator.guest.ssh import Result
from orchestrator.machines import Machine

TIMEOUT = 60  # seconds per test under KVM (scaled for TCG)
CTRL = "nvme0"
IO_TIMEOUT = 60  # a command with its retries


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
