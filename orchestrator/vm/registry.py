"""The live-VM registry: one private run directory per QEMU, and the reaping of orphans.

A record says which QEMU (pid + start time, so a recycled pid is never mistaken for ours) and
which tbctl process owns it. A VM whose owner died is an orphan: the next tbctl start kills it
and removes its run directory. VMs started by `tbctl up` have no owner and live until `down`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.paths import private_dir, state_dir

RECORD = "vm.json"


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int | None, started: int | None) -> bool:
    return pid is not None and started is not None and start_time(pid) == started


@dataclass
class Record:
    name: str
    run_dir: str
    artifacts: str
    image: str
    topology: str
    accel: str
    ssh_port: int
    pid: int | None = None
    pid_start: int | None = None
    owner_pid: int | None = None
    owner_start: int | None = None
    created: float = 0.0
    qemu: str | None = None  # the QEMU binary it runs
    bed: str | None = None  # a bed's machine: the bed (config.bed.ref), its role, its NICs' network ends
    role: str | None = None
    links: dict[str, list[int]] | None = None  # NIC id -> [local UDP port, remote]

    @property
    def qmp_socket(self) -> Path:
        return Path(self.run_dir) / "qmp.sock"

    @property
    def qtest_socket(self) -> Path:
        return Path(self.run_dir) / "qtest.sock"

    def qemu_alive(self) -> bool:
        if not alive(self.pid, self.pid_start):
            return False
        try:  # the pid must still be the QEMU that runs out of our run directory
            return self.run_dir.encode() in Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False

    def orphaned(self) -> bool:
        return self.owner_pid is not None and not alive(self.owner_pid, self.owner_start)


def vms_dir() -> Path:
    return private_dir(state_dir() / "vms")


@contextmanager
def locked() -> Iterator[None]:
    """Serialize registry changes between concurrent tbctl processes."""
    with open(private_dir(state_dir()) / "registry.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def save(rec: Record) -> None:
    path = Path(rec.run_dir) / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec), indent=2))
    os.replace(tmp, path)


def load(name: str) -> Record | None:
    try:
        return Record(**json.loads((vms_dir() / name / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def records() -> list[Record]:
    out = []
    for d in sorted(vms_dir().iterdir()):
        rec = load(d.name)
        if rec is not None:
            out.append(rec)
    return out


def kill(pid: int, started: int | None, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; a no-op once the process is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive(pid, started):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid, started):
            time.sleep(0.02)


def remove(rec: Record) -> None:
    shutil.rmtree(rec.run_dir, ignore_errors=True)


def reap() -> list[str]:
    """Kill orphaned QEMUs and remove run directories whose QEMU is gone. Returns what was reaped."""
    reaped = []
    with locked():
        for d in sorted(vms_dir().iterdir()):
            rec = load(d.name)
            if rec is None:
                # A run dir without a record: a launch cut off before QEMU started, or garbage.
                if time.time() - d.stat().st_mtime > 60:
                    shutil.rmtree(d, ignore_errors=True)
                    reaped.append(d.name)
                continue
            if rec.qemu_alive():
                if not rec.orphaned():
                    continue
                kill(rec.pid, rec.pid_start)  # type: ignore[arg-type]
            elif rec.pid is None and not rec.orphaned():
                continue  # being launched right now by a live tbctl
            remove(rec)
            reaped.append(rec.name)
    return reaped
