"""A device-mapper device over two partitions of an NVMe namespace, made, mounted and used.

Seed: SPDK's dm_mount test failed in CI with "device-mapper: reload ioctl on nvme_dm_test failed:
No such device": dmsetup ran while udev was still handling the events of the partitions sgdisk
had just made, so a device the table named did not exist yet. The fix is a sync: wait for the
uevents of exactly the partitions expected, as udev finished them, then `udevadm settle`.

The table names the partitions by the links udev makes for them (/dev/disk/by-partlabel/...),
so a dmsetup that outruns udev fails as the CI one did. Race mode makes udev slow on purpose.
Without the sync, udev's event queue is stopped (`udevadm control --stop-exec-queue`) until
dmsetup has run, so dmsetup fails with "No such device" every time, however fast or loaded the
machine. With the sync, a rule makes udev take RACE_DELAY seconds over each partition's event, and
the sync waits it out every time. (Not a stopped queue there: bookworm's udevd, systemd 252, at
times did not take its queue up again after `--start-exec-queue` when no new event followed:
events pending 30 s later, nothing in flight, twice in CI.)
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from orchestrator import guest
from orchestrator.errors import DeadlineError
from orchestrator.guest.ssh import SSH, Result
from orchestrator.machines import Machine

TIMEOUT = 120  # seconds per test under KVM (scaled for TCG)
DM_NAME = "nvme_dm_test"
PART_MIB = 64  # each partition; the dm device joins the first half of each
LABELS = ("tbctl_dm_p1", "tbctl_dm_p2")
RACE_DELAY = 2.0  # seconds udev takes longer over each partition event in the synced race
RACE_RUNS = 3  # the race is forced, not hoped for: each run shows it; `tbctl repro` gives rates
MOUNT = "/mnt/dm_mount"
SYNC_TIMEOUT = 30


@pytest.fixture
def disk(machine: Machine) -> Iterator[str]:
    """The namespace of the first controller, wiped before and after, with no dm device left."""
    ssh = machine.ssh
    ctrl = machine.topology.controllers[0]
    name = guest.nvme_state(ssh)[ctrl.serial]["block"][0]
    ssh.run("modprobe dm-mod", timeout=30, check=True)
    cleanup(ssh, name)
    yield name
    cleanup(ssh, name)


_CLEANUP = r"""
udevadm control --start-exec-queue; umount {mount} 2>/dev/null; dmsetup remove --retry {dm} 2>/dev/null
# The kernel drops the old partitions only when a re-read finds them idle: sgdisk's and wipefs's own
# re-reads fail (EBUSY) while udev's workers probe them, as they do the events a stopped queue kept
# back (seen on a busy machine): udev is let finish first, and the kernel asked again after.
udevadm settle --timeout=30
sgdisk --zap-all /dev/{disk} >/dev/null 2>&1; wipefs -qa /dev/{disk}; udevadm settle --timeout=30
for again in 1 2 3; do
    ls -d /sys/block/{disk}/{disk}p* >/dev/null 2>&1 || break
    blockdev --rereadpt /dev/{disk} 2>/dev/null; udevadm settle --timeout=30
done
if dmsetup info {dm} >/dev/null 2>&1; then echo "{dm} is still there" >&2; exit 1; fi
if ls -d /sys/block/{disk}/{disk}p* >/dev/null 2>&1; then echo "the kernel still has partitions of {disk}" >&2; exit 1; fi
"""


def cleanup(ssh: SSH, disk: str) -> None:
    """Unmounted, dm device removed, partition table wiped, udev done with all of it, and checked:
    a next step that starts from a leftover would fail for a reason that is not its own."""
    q = shlex.quote
    ssh.run(_CLEANUP.format(mount=q(MOUNT), dm=q(DM_NAME), disk=q(disk)), timeout=200, check=True)


@contextmanager
def stopped_udev(ssh: SSH) -> Iterator[None]:
    """udev's event queue stopped while the block runs: its events wait until the block is done."""
    ssh.run("udevadm control --stop-exec-queue", timeout=10, check=True)
    try:
        yield
    finally:  # a failure in the block is reported as it is; the restart's own failure only otherwise
        restarted = ssh.run("udevadm control --start-exec-queue", timeout=10)
    restarted.check()


SLOW_RULES = "/run/udev/rules.d/00-tbctl-slow.rules"


@contextmanager
def slow_udev(ssh: SSH, disk: str, delay: float) -> Iterator[None]:
    """While the block runs, udev's rules take `delay` seconds longer over every event of a
    partition of `disk`, so its links (and udev's event) come that much after the kernel's."""
    rule = f'ACTION=="add|change", SUBSYSTEM=="block", KERNEL=="{disk}p[0-9]*", PROGRAM="/bin/sleep {delay:g}"\n'
    ssh.run(f"mkdir -p /run/udev/rules.d && cat > {SLOW_RULES} && udevadm control --reload", timeout=30,
            stdin=rule.encode(), check=True)
    try:
        yield
    finally:
        removed = ssh.run(f"rm -f {SLOW_RULES} && udevadm control --reload", timeout=30)
    removed.check()


def partition(ssh: SSH, disk: str, sync: bool) -> None:
    """Two GPT partitions of PART_MIB with sgdisk. With `sync`, return only once udev finished
    the events of both partitions and its queue is empty."""
    watch = guest.UeventWatch(ssh, "block", source="udev") if sync else None
    try:
        ssh.run(f"sgdisk -n 1:2048:+{PART_MIB}M -c 1:{LABELS[0]} -n 2:0:+{PART_MIB}M -c 2:{LABELS[1]} "
                f"/dev/{shlex.quote(disk)}", timeout=30, check=True)
        if watch is not None:
            try:
                watch.wait_devices([f"{disk}p1", f"{disk}p2"], ("add", "change"), timeout=SYNC_TIMEOUT)
            except DeadlineError as e:
                raise DeadlineError(f"{e}\n{udev_state(ssh, disk)}", what=e.what, seconds=e.seconds) from None
            guest.settle(ssh)
    finally:
        if watch is not None:
            watch.close()


_UDEV_STATE = r"""
echo "kernel partitions: $(awk -v d={disk} 'index($4, d) == 1 {{print $4}}' /proc/partitions | tr '\n' ' ')"
if [ -e /run/udev/queue ]; then echo 'udev queue: events pending'; else echo 'udev queue: empty'; fi
echo "in flight: $(cat /sys/block/{disk}/inflight)"
ps -eo pid=,stat=,wchan:24=,args= | awk '$2 ~ /^D/ {{print "D state: " $0}}'
dmesg | grep -i udev | tail -n 5
"""


def udev_state(ssh: SSH, disk: str) -> str:
    """What tells a sync that saw no event why: whether the kernel has the partitions, whether
    udev still holds events, and what is stuck in the kernel (a worker blocked on I/O)."""
    res = ssh.run(_UDEV_STATE.format(disk=shlex.quote(disk)), timeout=20)
    return (res.stdout + res.stderr).strip()


def dm_table() -> str:
    """Half of each partition, joined (sizes in 512-byte sectors)."""
    half = PART_MIB * 1024 * 1024 // 512 // 2
    return "".join(f"{i * half} {half} linear /dev/disk/by-partlabel/{label} 0\n" for i, label in enumerate(LABELS))


def dmsetup_create(ssh: SSH) -> Result:
    return ssh.run(f"dmsetup create {DM_NAME}", timeout=60, stdin=dm_table().encode())


def test_dm_mount(machine: Machine, disk: str) -> None:
    """Partition (synced), join half of each partition in a dm device, check its holders, make
    ext4, mount, write and read back a file, unmount, remove."""
    ssh = machine.ssh
    partition(ssh, disk, sync=True)
    created = dmsetup_create(ssh)
    assert created.ok, f"dmsetup create {DM_NAME}: {created.stderr.strip()}"
    dm = ssh.run(f"basename $(readlink -f /dev/mapper/{DM_NAME})", timeout=10, check=True).stdout.strip()
    for part in (f"{disk}p1", f"{disk}p2"):
        assert ssh.run(f"test -e /sys/class/block/{part}/holders/{dm}", timeout=10).ok, f"{dm} does not hold {part}"
    size = ssh.run(f"blockdev --getsize64 /dev/mapper/{DM_NAME}", timeout=10, check=True).stdout.strip()
    assert size == str(PART_MIB * 1024 * 1024), f"{DM_NAME}: blockdev --getsize64 said {size!r}, not {PART_MIB} MiB"
    ssh.run(f"mkfs.ext4 -qF /dev/mapper/{DM_NAME} && mkdir -p {MOUNT} && mount /dev/mapper/{DM_NAME} {MOUNT} && "
            f"head -c 4194304 /dev/urandom > /tmp/dm_data && cp /tmp/dm_data {MOUNT}/test_dm && sync && "
            f"echo 3 > /proc/sys/vm/drop_caches && cmp /tmp/dm_data {MOUNT}/test_dm && umount {MOUNT}",
            timeout=120, check=True)
    ssh.run(f"dmsetup remove {DM_NAME}", timeout=30, check=True)
    assert not ssh.run(f"test -e /dev/mapper/{DM_NAME}", timeout=10).ok


def test_race_mode(machine: Machine, disk: str) -> None:
    """With udev slowed down, RACE_RUNS times: dmsetup right after sgdisk fails with the CI's
    "No such device"; after the uevent sync it succeeds."""
    ssh = machine.ssh
    for run in range(1, RACE_RUNS + 1):
        with stopped_udev(ssh):  # the CI's race, forced: udev has done nothing when dmsetup runs
            partition(ssh, disk, sync=False)
            raced = dmsetup_create(ssh)
        assert not raced.ok and f"reload ioctl on {DM_NAME}" in raced.stderr and "No such device" in raced.stderr, (
            f"run {run}: without the sync dmsetup was expected to fail with 'No such device', got exit "
            f"{raced.rc}: {raced.stderr.strip()}")
        cleanup(ssh, disk)
        with slow_udev(ssh, disk, RACE_DELAY):
            partition(ssh, disk, sync=True)
            synced = dmsetup_create(ssh)
        assert synced.ok, f"run {run}: with the sync dmsetup failed: {synced.stderr.strip()}"
        cleanup(ssh, disk)
