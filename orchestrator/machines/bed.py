"""A bed's machines, booted together: each network's two ends chosen on loopback, every QEMU
started at once (most of a boot is waiting), all shut down if one fails, so nothing is left half up."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

from orchestrator.config import bed as beds
from orchestrator.config.bed import Bed
from orchestrator.image import Image
from orchestrator.machines.machine import Machine
from orchestrator.net import links
from orchestrator.vm.machine import Saved


def boot(bed: Bed, image: Image, accel: str, artifacts: Path, shares: dict[str, Path] | None = None,
         boot_timeout: float | None = None, name: str | None = None, persistent: bool = False,
         keepable: bool = False, restore: dict[str, Saved | None] | None = None) -> dict[str, Machine]:
    """Every machine of `bed`, ready, by role; artifacts in `artifacts`/ROLE, each named NAME-ROLE
    when a name is given. All QEMUs start first, then each is waited for in turn (restored ones
    side by side): they boot side by side, and every QEMU (but a persistent one, `tbctl up`'s) is
    started from this thread, which it must not outlive. `restore`: role -> the saved guest it
    starts from (None: cold)."""
    ends = links.allocate(bed)
    extra: dict[str, Any] = {"boot_timeout": boot_timeout} if boot_timeout else {}
    machines = {role: Machine(topo, image, artifacts / role, accel=accel, shares=shares, links=ends[role],
                              name=f"{name}-{role}" if name else None, persistent=persistent, keepable=keepable,
                              bed=(beds.ref(bed), role), restore=(restore or {}).get(role), **extra)
                for role, topo in bed.machines.items()}
    try:
        for m in machines.values():
            m.start()
        if all(m.restore is not None for m in machines.values()):
            _finish_side_by_side(list(machines.values()))
        else:
            for m in machines.values():
                m.finish()
    except BaseException:  # one failed, or tbctl was interrupted: none is left up
        shutdown(machines, graceful=False)
        raise
    return machines


def _finish_side_by_side(machines: list[Machine]) -> None:
    """Restored machines made ready at once (their SSH sessions, hot-adds and checks), not in
    turn: each waits in a thread of its own (`wait_boot` starts no QEMU), and one whose guest
    broke is started again from this thread, which its QEMU must not outlive. The first error is
    raised once all are done; an interrupted wait leaves the threads to fail on their own,
    against machines the caller then shuts down."""
    pool = concurrent.futures.ThreadPoolExecutor(len(machines), thread_name_prefix="ready")
    try:
        while machines:
            futures = {m: pool.submit(m.wait_boot) for m in machines}
            concurrent.futures.wait(futures.values())
            machines = []
            for m, f in futures.items():
                if (broke := f.result()) is not None:
                    m.boot_again(broke)
                    machines.append(m)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def shutdown(machines: dict[str, Machine], graceful: bool = True) -> None:
    """Every machine of a bed, at once."""
    with concurrent.futures.ThreadPoolExecutor(max(1, len(machines)), thread_name_prefix="down") as pool:
        for f in [pool.submit(m.shutdown, graceful) for m in machines.values()]:
            f.result()
