"""Faults fired when a running script reaches a point: `--fault 'remove nvme0 after "START TEST
nvme_reset" +2s'`, that is KIND [ARGS] after MARKER [+DELAY], KIND and ARGS as `tbctl inject`
takes them. The first output line that contains MARKER starts DELAY (seconds; then the run's
seeded jitter), and the fault fires once on the script's machine, from a thread of its own: the
script's output goes on being read, and its timeline shows the fault beside the step it hit.

Why: SPDK's own tests run under faults its CI cannot make (it dropped its QMP hotplug test), at
the moment a developer names by what the script prints, not by a guess of seconds."""

from __future__ import annotations

import dataclasses
import random
import re
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.errors import ConfigError, TbctlError
from orchestrator.faults import table
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import Kind, Timing
from orchestrator.faults.timing import Timed

OPTION = "--fault"
FORM = "KIND [ARGS] after MARKER [+SECONDS], e.g. 'remove nvme0 after \"START TEST nvme_reset\" +2s'"
_DELAY = re.compile(r"^\+(\d+(?:\.\d+)?)s?$")
MAX_DELAY = 3600.0


@dataclass(frozen=True)
class MarkerFault:
    spec: str  # as given
    kind: Kind
    args: tuple[tuple[str, str], ...]
    marker: str
    delay: float


def parse(spec: str) -> MarkerFault:
    """One --fault; a mistake is one ConfigError naming the option, the spec and the form."""
    where = f"{OPTION} {spec!r}"
    try:
        words = shlex.split(spec)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}; must be {FORM}") from None
    if "after" not in words or words.index("after") == 0:
        raise ConfigError(f"{where}: must be {FORM}")
    at = words.index("after")
    rest = words[at + 1:]
    if not rest or not rest[0].strip() or len(rest) > 2:
        raise ConfigError(f"{where}: after what? must be {FORM} (quote a MARKER with spaces)")
    delay = 0.0
    if len(rest) == 2:
        m = _DELAY.match(rest[1])
        if m is None or float(m[1]) > MAX_DELAY:
            raise ConfigError(f"{where}: delay {rest[1]!r}: must be +SECONDS (e.g. +2s), at most {MAX_DELAY:g}")
        delay = float(m[1])
    kind, args = table.parse(words[:at], where)
    return MarkerFault(spec, kind, tuple(args.items()), rest[0], delay)


class Watch:
    """The marker faults of one script run on `machine`: fed each output line, each fault fires
    once; `finish` says what went wrong (a fault that failed, a marker never printed)."""

    def __init__(self, faults: Sequence[MarkerFault], machine: Injectable, timing: Timing):
        self.machine, self.timing = machine, timing
        self._waiting = list(faults)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._ended = threading.Event()  # the script ended: a fault still in its delay is not fired
        self.fired: list[Timed] = []  # the schedules, for the test's record and timeline
        self.said: list[str] = []  # what each fault reported, in the order they fired
        self.errors: list[str] = []
        self.failed: list[tuple[float, str]] = []  # (host time.time(), fault): the timeline shows these too

    def line(self, text: str) -> None:
        for f in [f for f in self._waiting if f.marker in text]:
            self._waiting.remove(f)
            t = threading.Thread(target=self._fire, args=(f,), name=f"fault {f.spec}", daemon=True)
            self._threads.append(t)
            t.start()

    def _fire(self, f: MarkerFault) -> None:
        # The delay and the run's seeded jitter are waited here, where the script's end stops the
        # wait: a fault is never fired after the script it was meant for. The kind then fires at
        # once, and its schedule says the whole delay.
        with self._lock:
            delay = f.delay + (self.timing.rng or random.Random(0)).uniform(0, self.timing.jitter)
        if delay and self._ended.wait(delay):
            with self._lock:
                self.errors.append(f"fault {f.spec!r} never fired: the script ended within its +{delay:.3g} s")
            return
        at = time.time()
        try:
            said, timed = f.kind.fire(self.machine, dict(f.args), dataclasses.replace(self.timing, jitter=0.0))
        except Exception as e:  # in a thread of its own: whatever went wrong is said, never lost
            with self._lock:
                self.errors.append(f"fault {f.spec!r} failed: {e if isinstance(e, TbctlError) else repr(e)}")
                self.failed.append((at, f"{f.spec} (failed)"))
            return
        timed.schedule[:] = [(what, round(delay, 4)) for what, _ in timed.schedule]
        with self._lock:
            self.fired.append(timed)
            self.said.append(f"fault {f.spec!r}: {said}")

    def finish(self, timeout: float) -> list[str]:
        """Once the script ended: wait (at most `timeout` s) for the faults firing; what went
        wrong, one line each."""
        self._ended.set()
        for t in self._threads:
            t.join(timeout)
        problems = list(self.errors)
        problems += [f"fault {t.name.removeprefix('fault ')!r} still firing after {timeout:g} s"
                     for t in self._threads if t.is_alive()]
        problems += [f"fault {f.spec!r} never fired: no line of the output contained {f.marker!r}"
                     for f in self._waiting]
        return problems
