"""An I/O stall on a namespace, made on the device side: a blkdebug breakpoint on the namespace's
drive (HMP `qemu-io -d DEVICE "break EVENT TAG"`, through the blkdebug node faults/media.py puts
under the drive) holds the first read or write to come, as a device that stops answering one
command would, until the given seconds after the break; then it is let go (`remove_break`, which
also resumes a held request). QEMU does not say whether one came (blkdebug prints it only without
qtest, and to its buffered stdout): the guest's own timing does.

The stall always ends before the fault returns. While a request is held, anything that drains
the drive waits for it inside QEMU, holding its big lock: a controller reset from the guest makes
QEMU stop answering, the monitor too, so nothing can let the request go (seen on QEMU 7.2: a
10 s hold under a 3 s I/O timeout hung QEMU for good). So a hold as long as the guest kernel's
I/O timeout for the namespace is refused; a userspace driver's timeouts cannot be read, and are
the caller's to keep above the hold."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

from orchestrator import guest
from orchestrator.errors import ConfigError
from orchestrator.faults import media
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, NS, Kind, Param, Timing, namespace
from orchestrator.faults.timing import Timed
from orchestrator.vm.qmp import media_node

MAX_SECONDS = 600.0
EVENTS = {"read": "read_aio", "write": "write_aio"}  # what the raw node raises on its file before each


def seconds(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: must be seconds, above 0 and at most {MAX_SECONDS:g}")
    return f"{value:g}"


def _qemu_io(m: Injectable, device: str, command: str, timeout: float) -> None:
    m.qmp.hmp(f'qemu-io -d {device} "{command}"', timeout)


def _below_the_guests_timeout(m: Injectable, serial: str, nsid: int, hold: float, timeout: float) -> None:
    """Refuse a hold the guest kernel's I/O timeout for the namespace would cut short with a reset."""
    state = guest.nvme_state(m.ssh).get(serial) or {}
    disk = f"{state.get('name')}n{nsid}"
    if disk not in state.get("block", []):
        return  # not the kernel's: a userspace driver has it, or nobody
    ms = int(m.ssh.run(f"cat /sys/block/{disk}/queue/io_timeout", timeout=timeout, check=True).stdout)
    if hold * 1000 >= ms:
        raise ConfigError(f"io-stall of {hold:g} s: {disk}'s I/O timeout is {ms / 1000:g} s; the guest would reset the "
                          "controller while QEMU holds the command, and QEMU would hang in that reset (keep the "
                          f"hold below it, or raise /sys/block/{disk}/queue/io_timeout)")


def _io_stall(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    ctrl, nsid, _ = namespace(m, a)
    node, hold = ctrl.node(nsid), float(a["seconds"])
    device = ctrl.id if "drive" in ctrl.device() else f"{ctrl.id}-ns{nsid}"  # the qdev holding the drive
    tag = f"tbctl-stall-{time.monotonic_ns()}"
    timed = t.timed()
    timed.delay(f"io-stall {ctrl.id} ns {nsid} {a['op']} {a['seconds']} s")
    _below_the_guests_timeout(m, ctrl.serial, nsid, hold, t.timeout)
    if media_node(node) not in m.qmp.block_nodes(t.timeout):
        media.insert(m, node, [], t.timeout)
    _qemu_io(m, device, f"break {EVENTS[a['op']]} {tag}", t.timeout)
    try:
        time.sleep(hold)
    finally:
        _qemu_io(m, device, f"remove_break {tag}", t.timeout)
    return (f"{ctrl.id} namespace {nsid}: the first {a['op']} to come was held until {hold:g} s after the break, "
            "then let go"), timed


KINDS = (
    Kind("io-stall", "hold a namespace's next read or write in QEMU for SECONDS (a blkdebug breakpoint under "
         "its drive), as a device that stops answering one command, then let it go",
         (CTRL, Param("seconds", "how long the command is held", check=seconds), NS,
          Param("op", "which command is held", tuple(EVENTS), default="read")), _io_stall),
)
