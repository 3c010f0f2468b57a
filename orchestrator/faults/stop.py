"""A target stopped under load at a seeded moment: its app signalled (SIGTERM, as SPDK's
killprocess does it; SIGKILL, nothing cleaned up), or its whole machine paused (QMP stop: the
network falls silent and nothing is closed, as a node that hangs) and resumed."""

from __future__ import annotations

import random
import shlex
from collections.abc import Mapping

from orchestrator.errors import MachineError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import Fire, Kind, Param, Timing
from orchestrator.faults.timing import Timed
from orchestrator.guest.ssh import RemoteProcess

SIGNALS = ("TERM", "KILL", "INT")


class Stop(Timed):
    def __init__(self, machine: Injectable, rng: random.Random | None = None, jitter: float = 0.0):
        super().__init__(rng, jitter)
        self.machine = machine

    def app(self, proc: RemoteProcess, sig: str = "TERM") -> None:
        """Signal the app `proc` (and what it started) with SIG`sig`."""
        if sig not in SIGNALS:
            raise ValueError(f"signal {sig!r}: must be one of {', '.join(SIGNALS)}")
        self.delay(f"app-{sig.lower()} {proc.label}")
        proc.signal(sig)

    def program(self, name: str, sig: str = "TERM", timeout: float = 10) -> list[int]:
        """Signal every process of program `name` in the guest (as pidof finds it: by its argv[0],
        which SPDK's apps keep while they rename their main thread); returns their pids."""
        if sig not in SIGNALS:
            raise ValueError(f"signal {sig!r}: must be one of {', '.join(SIGNALS)}")
        self.delay(f"app-{sig.lower()} {name}")
        q = shlex.quote(name)
        res = self.machine.ssh.run(f"pids=$(pidof -- {q}) || exit 3; kill -s {sig} $pids && echo $pids",
                                   timeout=timeout)
        if res.rc == 3:
            raise MachineError(f"{self.machine.topology.name}: no process of program {name!r} in the guest")
        if res.rc != 0:
            raise MachineError(f"kill -s {sig} {name}: {res.stderr.strip() or f'exit status {res.rc}'}")
        return [int(p) for p in res.stdout.split()]

    def pause(self) -> None:
        self.delay("vm-pause")
        self.machine.qmp.execute("stop")

    def resume(self) -> None:
        self.delay("vm-resume")
        self.machine.qmp.execute("cont")


def _app_signal(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    stop = Stop(m, t.rng, t.jitter)
    pids = stop.program(a["program"], a["signal"], t.timeout)
    return f"{a['program']}: SIG{a['signal']} to pid {', '.join(map(str, pids))}", stop


def _vm(pause: bool) -> Fire:
    def fire(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
        stop = Stop(m, t.rng, t.jitter)
        (stop.pause if pause else stop.resume)()
        return f"{m.name}: {m.qmp.execute('query-status', timeout=t.timeout)['status']}", stop
    return fire


KINDS = (
    Kind("app-signal", "signal every process of a program in the guest (a target killed)",
         (Param("program", "its name, as pidof finds it (e.g. nvmf_tgt)"), Param("signal", "the signal", SIGNALS)),
         _app_signal),
    Kind("vm-pause", "pause the whole VM (QMP stop): a node that hangs, nothing closed", (), _vm(True), ssh=False),
    Kind("vm-resume", "resume a paused VM (QMP cont)", (), _vm(False), ssh=False),
)
