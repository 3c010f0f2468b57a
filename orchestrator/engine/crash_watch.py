"""A crash ends the test at once, not at its deadline: one watcher thread per machine reads its
console and QMP events while the test runs, and reports the first fatal finding, or the first
report of a kernel stuck (a hung task, a soft lockup, an RCU stall) once the stuck kernel's
stacks were asked for, while it is still stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.errors import DeadlineError, MachineError
from orchestrator.report import crash

REPORT_GRACE = 2.0  # seconds a started report gets to print its call trace


class CrashWatch:
    """Watches one machine's console and QMP events while a test runs and calls `on_fatal` once,
    from its own thread, with the first fatal finding: a panicked guest ends the test at once
    instead of at its deadline."""

    def __init__(self, console: Any, qmp: Any, console_mark: int, qmp_mark: int,
                 on_fatal: Callable[[crash.Finding], None], name: str = "vm",
                 qemu_died: Callable[[], bool] = lambda: False, on_hang: Callable[[], None] = lambda: None):
        self.console, self.qmp, self.on_fatal, self.qemu_died = console, qmp, on_fatal, qemu_died
        self.on_hang = on_hang
        self.console_mark, self.qmp_mark = console_mark, qmp_mark
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"crash-watch-{name}", daemon=True)

    def start(self) -> CrashWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(REPORT_GRACE + 2)

    def _died(self) -> bool:
        """QEMU exited on its own (its console closing may come a moment before its exit)."""
        for _ in range(20):
            if self._stop.is_set():
                return False
            if self.qemu_died():
                return True
            time.sleep(0.1)
        return False

    def _panicked(self) -> crash.Finding | None:
        found = crash.qmp_findings(self.qmp.events(self.qmp_mark)) if self.qmp is not None else []
        return found[0] if found else None

    def _run(self) -> None:
        pos = self.console_mark
        while not self._stop.is_set():
            try:
                m = self.console.wait_for([crash.FATAL_START, crash.HANG_START], 0.5, after=pos)
            except DeadlineError:
                if f := self._panicked():
                    self.on_fatal(f)
                    return
                continue
            except MachineError:  # the console closed: QEMU is gone
                if f := self._panicked():
                    self.on_fatal(f)
                elif self._died():
                    self.on_fatal(crash.Finding("QEMU died", "qemu", True, ""))  # the test's report says why
                return
            try:
                self.console.wait_for([crash.REPORT_END], REPORT_GRACE, after=m.start())
            except (DeadlineError, MachineError):
                pass
            found = crash.kernel_findings(self.console.text[self.console_mark:])
            fatal = [f for f in found if f.fatal]
            if fatal:
                self.on_fatal(fatal[0])
                return
            if crash.HANG_START.match(self.console.text, m.start()):
                self.on_hang()  # its stacks, now: the test's own clean-up may end the hang
                hung = [f for f in crash.kernel_findings(self.console.text[self.console_mark:])
                        if f.title.startswith(crash.HANG_TITLES)]
                self.on_fatal(hung[0] if hung else crash.Finding("kernel stuck", "kernel", False, m.group(0)))
                return
            pos = m.end()
