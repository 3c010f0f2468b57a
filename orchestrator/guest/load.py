"""A load a test judges, in the guest: known to be doing I/O before the first fault fires, and,
when it ends without the report the test reads, a failure that says what happened to it (how it
ended, how long it ran, its last lines), never a parse error.

Why: on a busy host a load can still be starting when a short fault sequence is over. fio was
interrupted 4 s after its start, before its first I/O, printed no report, and the test then
parsed a report that was not there ("substring not found").
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

from orchestrator.errors import LoadFailed, TbctlError
from orchestrator.guest.ssh import SSH, RemoteProcess, Result
from orchestrator.render import render

LOOK = 0.1  # seconds between two looks at a device's I/O counters (io_moving.sh.j2)
_WRITES = re.compile(r"--rw=(?:rand)?(?:write|rw|readwrite|trimwrite)\b")  # a fio job that writes


def failed(label: str, res: Result, why: str) -> LoadFailed:
    """`label` ended (`res`) without what the test needed (`why`): how it ended, after how long,
    and its last lines."""
    return LoadFailed(f"{label} {res.ended} after {res.seconds:.1f} s {why}; its last lines:\n"
                      f"{res.tail() or '(no output)'}", label=label, rc=res.rc, seconds=res.seconds,
                      output=res.stdout + res.stderr)


def wait_io(ssh: SSH, proc: RemoteProcess, device: str, timeout: float, writes_only: bool = False) -> str:
    """Until `device`'s completed I/O count grows while `proc` runs (its I/O is under way, not
    only its start): what the guest counted. LoadFailed if `proc` ends first or no I/O is seen
    within `timeout`. `writes_only`: only completed writes count, for a load that writes: udev's
    probes read a namespace too (seen: "moving: 3 -> 6 I/Os" while fio was still setting up, its
    report then empty)."""
    started = time.monotonic()
    pid = proc.wait_pid(timeout)
    if pid is None:
        if proc.poll():
            raise failed(proc.label, proc.wait(), "before doing any I/O")
        raise LoadFailed(f"{proc.label}: its guest wrapper reported no pid within {timeout:g} s", label=proc.label)
    left = max(LOOK, timeout - (time.monotonic() - started))
    script = render("guest/io_moving.sh.j2", dev=device.removeprefix("/dev/"), pid=pid, looks=int(left / LOOK) + 1,
                    writes_only=writes_only)
    res = ssh.run("sh -s", timeout=left * 3 + 30, stdin=script.encode())
    if res.rc == 0:
        return res.stdout.strip()
    if res.rc == 3 or proc.poll():
        raise failed(proc.label, proc.wait(30), f"before doing any I/O on {device}")
    raise LoadFailed(f"{proc.label}: no {'write' if writes_only else 'I/O'} completed on {device} within {timeout:g} s of its start "
                     f"({res.stdout.strip() or res.tail()}); it runs on: {proc.output()[-500:] or 'no output'}",
                     label=proc.label, seconds=timeout, output=proc.output())


class Fio:
    """fio on one block device with a JSON report: started, known to be doing I/O (`wait_io`),
    stopped with SIGINT (fio ends its jobs and prints its report), its report read."""

    def __init__(self, ssh: SSH, device: str, job: str, timeout: float, label: str = ""):
        self.ssh, self.device = ssh, device
        self.writes = bool(_WRITES.search(job))
        self.label = label or f"fio on {device}"
        self.proc = ssh.start(f"exec fio --filename={shlex.quote(device)} {job} --output-format=json",
                              timeout=timeout, label=self.label)

    def wait_io(self, timeout: float = 60) -> str:
        return wait_io(self.ssh, self.proc, self.device, timeout, writes_only=self.writes)

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        """SIGINT, then its report (LoadFailed when it printed none)."""
        self.proc.signal("INT")
        return report(self.proc.wait(timeout), self.label)


def report(res: Result, label: str) -> dict[str, Any]:
    """fio's JSON report in its output (fio may print notes before it), with one job or more;
    LoadFailed saying how fio ended when there is none."""
    start = res.stdout.find("{")
    try:
        doc = json.loads(res.stdout[start:]) if start >= 0 else None
    except ValueError:
        doc = None
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, dict) and "error" in j for j in jobs):
        why = "with a report that is cut short or not fio's" if start >= 0 else "without printing its report"
        raise failed(label, res, why)
    return doc  # type: ignore[return-value]


class UioReads:
    """tbctl's own polled userspace NVMe driver (templates/guest/uio_nvme_io.py.j2) reading from
    a controller bound to uio_pci_generic, writing its doorbells as SPDK's driver does: what QEMU
    must survive when the controller is unplugged under it, with no SPDK tree needed."""

    def __init__(self, ssh: SSH, bdf: str, rewrites: int, depth: int = 8, timeout: float = 600):
        """`rewrites`: the unchanged SQ tail written again that many times between polls, the
        doorbell rate of a poller in C rather than of this Python."""
        self.ssh, self.label = ssh, f"userspace reads on {bdf}"
        script = render("guest/uio_nvme_io.py.j2", bdf=bdf, depth=depth, rewrites=rewrites)
        self.proc = ssh.start("python3 -", timeout=timeout, stdin=script.encode(), label=self.label)

    def wait_running(self, timeout: float = 60) -> None:
        """Until its first reads completed; LoadFailed saying how it ended if it ended first."""
        try:
            line = self.proc.readline(timeout)
        except TbctlError:
            if self.proc.poll():
                raise failed(self.label, self.proc.wait(30), "before its reads began") from None
            raise
        if line != "io running":
            raise failed(self.label, self.proc.wait(30), f"before its reads began ({line})")

    def finish(self, timeout: float = 30) -> str:
        """Its last word ("ended: ..."): it ends by itself once its controller is gone (no read
        completes for 5 s); one still running `timeout` s from now is killed (DeadlineError)."""
        res = self.proc.wait(timeout)
        ended = [ln for ln in res.stdout.splitlines() if ln.startswith("ended: ")]
        if res.rc != 0 or not ended:
            raise failed(self.label, res, "without its last word")
        return ended[-1]

    def close(self) -> None:
        """Whatever is left of it gone (after a test that failed half-way)."""
        if self.proc in self.ssh.active:
            self.proc.kill()
