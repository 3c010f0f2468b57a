"""Tasks that outlived SIGKILL, and where in the kernel they wait: a command killed at its deadline
whose processes stay in D state is not a slow app but a kernel that never completes their I/O,
and the frames under the scheduler's say which part of it.

Input: what the guest printed for each task still there, `task ` and its /proc/PID/stat line, then
its /proc/PID/stack lines indented (`  [<0>] blk_mq_freeze_queue_wait+0x5e/0x90`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.report import crash

_TASK = re.compile(r"^task (\d+) \((.*)\) (\S) ")
_FRAME = re.compile(r"^\s+\[<[0-9a-f]+>\] ([\w.]+)\+0x")
SHOWN = 3  # frames named in the one-line summary


@dataclass(frozen=True)
class StuckTask:
    pid: int
    comm: str
    state: str
    frames: tuple[str, ...]  # innermost first, offsets dropped

    @property
    def waits_in(self) -> tuple[str, ...]:
        """The innermost frames that say what it waits for."""
        return tuple(f for f in self.frames if not crash.plumbing(f))[:SHOWN]


def parse(text: str, settled: str) -> list[StuckTask]:
    """The tasks whose state is not one of `settled` (after SIGKILL: Z), with their stacks."""
    tasks: list[StuckTask] = []
    head: tuple[int, str, str] | None = None
    frames: list[str] = []

    def done() -> None:
        if head is not None and head[2] not in settled:
            tasks.append(StuckTask(*head, tuple(frames)))

    for line in text.splitlines():
        if m := _TASK.match(line):
            done()
            head, frames = (int(m[1]), m[2], m[3]), []
        elif head is not None and (f := _FRAME.match(line)):
            frames.append(f[1])
    done()
    return tasks


def places(tasks: list[StuckTask]) -> str:
    """Where they are stuck, each place once, in a fixed order and without pids: a failure's first
    line, the same for every run that got stuck the same way (how many tasks sat where varies)."""
    return "; ".join(sorted({f"{t.comm} ({t.state}) " + (f"in {' <- '.join(t.waits_in)}" if t.waits_in
                                                           else "with no kernel stack") for t in tasks}))


def describe(tasks: list[StuckTask]) -> str:
    """One line per distinct (command, state, place): `fio 666, 667 (D) in blk_mq_freeze_queue_wait
    <- nvme_mpath_... `; `no kernel stack` when the guest could not read one."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[int]] = {}
    for t in tasks:
        groups.setdefault((t.comm, t.state, t.waits_in), []).append(t.pid)
    return "; ".join(f"{comm} {', '.join(map(str, pids))} ({state}) "
                     + (f"in {' <- '.join(where)}" if where else "with no kernel stack")
                     for (comm, state, where), pids in groups.items())
