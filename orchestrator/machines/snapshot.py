"""Snapshot fast restore: boot a guest once, save it ready, start later machines from the save.

QEMU 7.2's NVMe controller cannot be migrated or saved, so the saved guest has its hot-pluggable
controllers' root ports empty: a machine restored from it hot-adds them, as a test would. A bed's
NICs, too: their MACs and their networks' ends are each machine's own. The
save is QEMU's migration stream to a file plus the root disk as it was at that moment; each
restored machine gets a fresh overlay on that disk. A topology with a controller or NIC that is
not hot-pluggable cannot be saved, nor can a guest of QEMU 10 under TCG (its restored guests lost
timer interrupts): such machines boot cold, and `unsupported` says why.

Saves are cached under $TBCTL_CACHE/snapshots, keyed by everything that shapes the machine
(image, QEMU, accelerator, topology, shares, tbctl), and made once, under a lock, by whichever
run needs one first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import __version__, paths
from orchestrator.config.topology import Topology
from orchestrator.errors import MachineError
from orchestrator.image import Image
from orchestrator.machines.machine import Machine
from orchestrator.vm import qemu_binary
from orchestrator.vm.machine import TCG_KERNEL_ARGS, Saved


def prepare() -> str:
    """The guest command run before it is saved: it imports the stdlib modules tbctl's own guest
    scripts import (read from templates/guest/*.py.j2, so the list cannot go stale), so every
    restored guest has them in its page cache (the hotplug app's start: 0.95 s cold, 0.30 s warm
    under TCG), then lets udev settle and syncs the disk."""
    modules = sorted({name.strip() for template in (paths.TEMPLATES / "guest").glob("*.py.j2")
                      for line in template.read_text().splitlines() if line.startswith("import ")
                      for name in line.removeprefix("import ").split(",")})
    return f"python3 -c {shlex.quote('import ' + ', '.join(modules))}; udevadm settle --timeout=60; sync"


def unsupported(topology: Topology, accel: str) -> str | None:
    """Why machines of this topology, on the current QEMU and `accel`, cannot start from a save, or None."""
    q = qemu_binary.current()
    if accel == "tcg" and q.at_least(10):
        return (f"QEMU {q.version_text} under TCG: a restored guest lost an idle vCPU's timer interrupts on a busy host "
                "(RCU stalls, NVMe completions without their interrupt, SSH silent: 5 of 14 restored runs of "
                "sw_hotplug beside a busy VM, 0 of 10 cold); QEMU 7.2's restored guests did not")
    fixed = [c.id for c in topology.controllers if not c.hotplug]
    if fixed:
        return (f"controller(s) {', '.join(fixed)} not hot-pluggable: QEMU 7.2 cannot save an NVMe controller, "
                "so only controllers hot-added after the restore can be used")
    if any(c.pmr_size_mib for c in topology.controllers):
        return "a controller with a PMR (its memory backend is not hot-added)"
    fixed = [n.id for n in topology.nics if not n.hotplug]
    if fixed:
        return (f"NIC(s) {', '.join(fixed)} not hot-pluggable: a restored guest gets its NICs hot-added (a saved "
                "guest has none: a NIC's MAC and its network's ends are each machine's own)")
    return None


def key(topology: Topology, image: Image, accel: str, shares: dict[str, Path]) -> str:
    argv_template = (paths.TEMPLATES / "qemu" / "argv.j2").read_text()
    q = qemu_binary.current()
    shape = {"image": image.digest, "qemu": [str(q.path), q.version_line], "accel": accel, "tbctl": __version__, "argv": argv_template,
             "prepare": prepare(),
             "machine": [topology.memory_mib, topology.cpus, topology.iommu, topology.hugepages, topology.qtest,
                         topology.kernel_args(), TCG_KERNEL_ARGS],
             "ports": [c.root_port for c in topology.controllers if c.hotplug] +
                      [n.root_port for n in topology.nics if n.hotplug],
             "shares": {tag: str(p) for tag, p in sorted(shares.items())}}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def root() -> Path:
    return paths.cache_dir() / "snapshots"


def ensure(topology: Topology, image: Image, accel: str, shares: dict[str, Path] | None = None,
           log: Callable[[str], None] = lambda msg: None) -> Saved:
    """The save for this machine shape, made now if there is none yet."""
    shares = shares or {}
    reason = unsupported(topology, accel)
    if reason:
        raise MachineError(f"cannot snapshot this machine: {reason}")
    final = Saved(root() / key(topology, image, accel, shares))
    root().mkdir(parents=True, exist_ok=True)
    with open(root() / f"{final.dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker; the others wait and then reuse it
        if final.state.exists():
            return final
        work = Path(tempfile.mkdtemp(prefix=f"{final.dir.name}.", dir=root()))
        try:
            seconds = _save(topology, image, accel, shares, Saved(work), log)
            (work / "meta.json").write_text(json.dumps({"created": time.time(), "seconds": seconds,
                                                        "image": image.digest, "accel": accel}) + "\n")
            work.rename(final.dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _save(topology: Topology, image: Image, accel: str, shares: dict[str, Path], into: Saved,
          log: Callable[[str], None], timeout: float = 180) -> float:
    """Boot with empty root ports, let the guest settle, stream its state into a file and keep
    its disk as it was at that moment."""
    t0 = time.monotonic()
    m = Machine(topology, image, into.dir / "template", accel=accel, shares=shares, empty_ports=True)
    with m:
        m.ssh.run(prepare(), timeout=90, check=True)
        m.close_guest()  # no TCP session in the saved state
        m.qmp.execute("migrate", {"uri": "exec:cat > " + shlex.quote(str(into.state))})
        deadline = time.monotonic() + timeout
        while (status := m.qmp.execute("query-migrate").get("status")) != "completed":
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise MachineError(f"saving the guest failed (migration {status}): "
                                   f"{m.stderr_log.read_text()[-500:]}")
            time.sleep(0.1)
        shutil.copy(m.run_dir / "root.qcow2", into.disk)  # paused and flushed: the disk of that moment
        log(f"saved a ready guest in {time.monotonic() - t0:.1f} s: {into.state.stat().st_size >> 20} MiB")
        m.shutdown(graceful=False)
    return round(time.monotonic() - t0, 2)
