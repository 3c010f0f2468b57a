"""A target stopped under load at a seeded moment: its app signalled (SIGTERM, as SPDK's
killprocess does it; SIGKILL, nothing cleaned up), or its whole machine paused (QMP stop: the
network falls silent and nothing is closed, as a node that hangs) and resumed."""

from __future__ import annotations

import random

from orchestrator.faults.target import Target
from orchestrator.faults.timing import Timed
from orchestrator.guest.ssh import RemoteProcess

SIGNALS = ("TERM", "KILL", "INT")


class Stop(Timed):
    def __init__(self, machine: Target, rng: random.Random | None = None, jitter: float = 0.0):
        super().__init__(rng, jitter)
        self.machine = machine

    def app(self, proc: RemoteProcess, sig: str = "TERM") -> None:
        """Signal the app `proc` (and what it started) with SIG`sig`."""
        if sig not in SIGNALS:
            raise ValueError(f"signal {sig!r}: must be one of {', '.join(SIGNALS)}")
        self.delay(f"app-{sig.lower()} {proc.label}")
        proc.signal(sig)

    def pause(self) -> None:
        self.delay("vm-pause")
        self.machine.qmp.execute("stop")

    def resume(self) -> None:
        self.delay("vm-resume")
        self.machine.qmp.execute("cont")
