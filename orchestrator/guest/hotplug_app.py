"""Apps in the guest that watch NVMe controllers come and go, and what they reported.

`HotplugApp` runs one in the guest and follows its report line by line; `KernelHotplugApp` (the
guest kernel's nvme driver under test, watched by templates/guest/nvme_hotplug_app.py.j2) is one,
SPDK's build/examples/hotplug (orchestrator.spdk.hotplug_app) another. Every line an app prints
goes to its log in the test's artifacts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import DeadlineError, SSHError
from orchestrator.guest import load
from orchestrator.guest.ssh import SSH, RemoteProcess, Result
from orchestrator.render import render


@dataclass(frozen=True)
class Event:
    kind: str  # "insert" | "remove"
    serial: str
    seen_at: float  # host monotonic time the line arrived
    line: str


@dataclass(frozen=True)
class Summary:
    rc: int
    inserts: int
    removals: int
    result: Result


class MissedEvent(AssertionError):
    """The app did not report an event the test-bed caused: a test failure, not a hang."""


class HotplugApp:
    name = "app"

    def __init__(self, ssh: SSH, log: Path):
        self.ssh, self.log = ssh, log
        self.events: list[Event] = []
        self._proc: RemoteProcess | None = None
        self._cursor = 0
        self._since_event: list[str] = []  # what it printed after its last reported event

    # -- what each variant defines --
    def command(self, inserts: int, removals: int, seconds: int) -> tuple[str, bytes | None]:
        raise NotImplementedError

    def parse(self, line: str) -> tuple[str, str] | None:
        """(kind, serial) when `line` reports an event, "ready" handling aside."""
        raise NotImplementedError

    def is_ready(self, line: str) -> bool:
        raise NotImplementedError

    def summary(self, result: Result) -> Summary:
        raise NotImplementedError

    def not_started(self, output: str, status: int | None) -> Exception | None:
        """Why the app could not start, where a variant knows its app's words for it."""
        return None

    # -- shared --
    def start(self, inserts: int, removals: int, seconds: int, ready_timeout: float = 60) -> None:
        cmd, stdin = self.command(inserts, removals, seconds)
        self._proc = self.ssh.start(cmd, timeout=seconds + 30, stdin=stdin, label=f"{self.name} hotplug app ({cmd})")
        deadline = time.monotonic() + ready_timeout
        try:
            while not self.is_ready(self._line(deadline - time.monotonic(), "get ready")):
                pass
        except (SSHError, DeadlineError):
            failed = self.not_started(self._proc.output(), self._proc.exit_status)
            if failed is not None:
                raise failed from None
            raise

    def _record(self, line: str) -> None:
        with open(self.log, "a") as f:
            f.write(line + "\n")
        parsed = self.parse(line)
        if parsed:
            self.events.append(Event(parsed[0], parsed[1], time.monotonic(), line))
            self._since_event = []
        else:
            self._since_event.append(line)

    def _line(self, timeout: float, doing: str) -> str:
        assert self._proc is not None
        try:
            line = self._proc.readline(max(0.0, timeout))
        except DeadlineError:
            raise DeadlineError(f"{self.name} app did not {doing} within {timeout:.0f} s") from None
        self._record(line)
        return line

    def expect(self, kind: str, serial: str, timeout: float, what: str = "") -> Event:
        """The next reported event, which must be `kind` of `serial`; MissedEvent names what is missing."""
        deadline = time.monotonic() + timeout
        while True:
            if self._cursor < len(self.events):
                ev = self.events[self._cursor]
                self._cursor += 1
                if (ev.kind, ev.serial) == (kind, serial):
                    return ev
                raise MissedEvent(f"{self.name} app reported {ev.kind} {ev.serial} while the test-bed expected "
                                  f"{kind} {serial}{what}")
            try:
                self._line(deadline - time.monotonic(), f"report {kind} {serial}")
            except (DeadlineError, SSHError):
                seen = ", ".join(f"{e.kind} {e.serial}" for e in self.events) or "nothing"
                said = " | ".join(ln.strip() for ln in self._since_event[-6:] if ln.strip()) or "nothing"
                raise MissedEvent(f"{self.name} app missed {kind} {serial}{what}: not reported within "
                                  f"{timeout:g} s (it reported: {seen})\n"
                                  f"since its last report it printed: {said}") from None

    def finish(self) -> Summary:
        """Wait for the app to exit by itself (it stops once it saw every expected event)."""
        assert self._proc is not None
        result = self._proc.wait()
        for line in self._proc.unread_lines():
            self._record(line)
        if result.stderr:
            with open(self.log, "a") as f:
                f.write(result.stderr)
        return self.summary(result)

    def __enter__(self) -> HotplugApp:
        return self

    def __exit__(self, *exc: object) -> None:
        """An app still running when the test ends (it failed midway) is killed, not left behind."""
        if self._proc is not None and self._proc in self.ssh.active:
            self._proc.kill()

    def signal(self, sig: str) -> None:
        """Send STOP/CONT/KILL to the app's process group (pause it, resume it, kill it)."""
        assert self._proc is not None
        self._proc.signal(sig)


class KernelHotplugApp(HotplugApp):
    name = "kernel"

    def __init__(self, ssh: SSH, log: Path, poll: float = 0.02):
        super().__init__(ssh, log)
        self.poll = poll

    def command(self, inserts: int, removals: int, seconds: int) -> tuple[str, bytes | None]:
        script = render("guest/nvme_hotplug_app.py.j2", inserts=inserts, removals=removals, seconds=seconds,
                        poll=self.poll)
        return "python3 -", script.encode()

    def _json(self, line: str) -> dict[str, Any]:
        try:
            d = json.loads(line)
        except ValueError:
            return {}
        return d if isinstance(d, dict) else {}

    def is_ready(self, line: str) -> bool:
        return self._json(line).get("event") == "ready"

    def parse(self, line: str) -> tuple[str, str] | None:
        d = self._json(line)
        return (d["event"], d["serial"]) if d.get("event") in ("insert", "remove") and "serial" in d else None

    def summary(self, result: Result) -> Summary:
        """Its last summary line; LoadFailed saying how it ended when it printed none."""
        last = [d for line in result.stdout.splitlines() if '"summary"' in line
                if isinstance((d := self._json(line)).get("inserts"), int) and isinstance(d.get("removals"), int)]
        if not last:
            raise load.failed(f"{self.name} hotplug app", result, "without printing its summary")
        return Summary(result.rc, last[-1]["inserts"], last[-1]["removals"], result)
