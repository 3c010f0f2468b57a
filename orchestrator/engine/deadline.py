"""Every test body runs under a deadline and its machines' crash watches. When the deadline fires,
the guest commands in flight are killed (their whole process group), or the VM if the guest no
longer answers, and a diagnosis from QEMU's side says what hung. A test body cannot catch its own
deadline: TestDeadline is no Exception, and it fires again every REFIRE seconds."""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import faults
from orchestrator.engine import findings, slices
from orchestrator.engine.crash_watch import CrashWatch
from orchestrator.errors import TbctlError
from orchestrator.machines import Machine
from orchestrator.report import crash, stuck_tasks

REFIRE = 5.0


class TestDeadline(BaseException):
    """The per-test deadline fired. Not an Exception, nor a DeadlineError: a test body's own
    `except Exception` or `pytest.raises(DeadlineError)` cannot swallow it, and should one catch
    it anyway it fires again every REFIRE seconds and the test still ends `timed out`."""

    __test__ = False  # not a pytest test class


class GuestCrashed(TbctlError):
    """A fatal crash report (panic, oops, GUEST_PANICKED, QEMU dying) ended the test before its deadline."""


FIRED = pytest.StashKey[str]()  # the per-test deadline's message, once it fired


class SignalTimer:
    """The default deadline timer (pytest_tbctl_deadline_arm): SIGALRM in the main thread, again every
    REFIRE seconds until disarmed."""

    def __init__(self) -> None:
        self._previous: dict[str, Any] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_tbctl_deadline_arm(self, item: pytest.Item, seconds: float, fire: Callable[[], None]) -> bool:
        self._previous[item.nodeid] = signal.signal(signal.SIGALRM, lambda signum, frame: fire())
        signal.setitimer(signal.ITIMER_REAL, seconds, REFIRE)
        return True

    @pytest.hookimpl(trylast=True)
    def pytest_tbctl_deadline_disarm(self, item: pytest.Item) -> bool:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous.pop(item.nodeid, signal.SIG_DFL))
        return True


class Guard:
    """`with Guard(item, limit):` runs a test body under its deadline, with a crash watch on each
    of its machines: the first fatal crash interrupts the body at once (GuestCrashed, raised in
    the main thread through SIGUSR1)."""

    def __init__(self, item: pytest.Item, limit: float):
        self.item, self.limit = item, limit
        self.crashed: list[crash.Finding] = []
        self.watches: list[CrashWatch] = []
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        self._previous: Any = None

    def fire(self) -> None:
        self.item.stash[FIRED] = f"test deadline of {self.limit:g} s fired; {in_flight(self.item)}"
        raise TestDeadline(self.item.stash[FIRED])

    def _on_fatal(self, finding: crash.Finding) -> None:  # from a watcher thread
        with self._lock:
            if not self.crashed and self.watches:
                self.crashed.append(finding)
                signal.pthread_kill(self._main, signal.SIGUSR1)  # type: ignore[arg-type]

    def _end(self, signum: int, frame: Any) -> None:
        raise GuestCrashed(self.crashed[0].title if self.crashed else "guest crashed")

    def __enter__(self) -> Guard:
        self._previous = signal.signal(signal.SIGUSR1, self._end)
        for s in slices.of(self.item):
            m = s.machine
            if m.console is not None:
                self.watches.append(CrashWatch(m.console, m.qmp_channel, s.console_mark, s.qmp_mark, self._on_fatal,
                                               m.name, qemu_died=functools.partial(_qemu_died, m),
                                               on_hang=functools.partial(_hang_stacks, m, self.item)))
                self.watches[-1].start()  # listed first: _on_fatal ignores a watcher it does not know
        self.item.config.hook.pytest_tbctl_deadline_arm(item=self.item, seconds=self.limit, fire=self.fire)
        return self

    def __exit__(self, *exc: object) -> None:
        self.item.config.hook.pytest_tbctl_deadline_disarm(item=self.item)
        with self._lock:
            stopping, self.watches[:] = list(self.watches), []
        for w in stopping:
            w.stop()
        signal.signal(signal.SIGUSR1, self._previous)


def _qemu_died(m: Machine) -> bool:
    return not m.stopped and not m.qemu_alive()


def _hang_stacks(m: Machine, item: pytest.Item) -> None:
    findings.hang_stacks(m, slices.test_dir(item))


def in_flight(item: pytest.Item) -> str:
    cmds = [p.label for s in slices.of(item) for p in s.machine.commands_in_flight()]
    return "guest command(s) in flight: " + "; ".join(c[:200] for c in cmds) if cmds else "no guest command in flight"


def kill_hung(item: pytest.Item) -> list[str]:
    """After a deadline: kill the guest commands still running, or the VM if the guest is gone."""
    done = []
    for s in slices.of(item):
        for proc in s.machine.commands_in_flight():
            try:
                stuck = proc.kill()
                done.append(f"killed guest command: {proc.label[:200]}"
                            + (f" (stuck in the kernel: {stuck_tasks.describe(stuck)})" if stuck else ""))
            except Exception as e:  # the guest no longer answers: kill the VM itself
                s.machine.shutdown(graceful=False)
                done.append(f"guest did not answer ({e}); killed VM {s.machine.name}")
                break
    return done


def diagnose(item: pytest.Item) -> str:
    """Why a wait may never have ended, from QEMU's side of each machine: a device_del that never
    completed (where it stopped, the guest's blocked tasks, QEMU's threads) and each controller's
    fatal status (CSTS.CFS, with QEMU's NVMe error trace) and admin queue (what was fetched and
    completed last, what waits at the head), read from the host through qtest."""
    found = []
    for s in slices.of(item):
        m = s.machine
        qmp = m.qmp_channel
        if qmp is not None and qmp.unplug_lost and m.qemu_alive():
            bt = m.threads_backtrace()
            found.append(f"{m.name}: {qmp.unplug_lost}; the guest's blocked tasks: {blocked_tasks(m)}"
                         + (f"; QEMU's threads: {bt}" if bt else ""))
        if m.topology.qtest and m.qemu_alive():
            found += _controllers(m)
    return "\n".join(found)


def _controllers(m: Machine) -> list[str]:
    found = []
    for c in m.topology.controllers:
        try:
            fatal = faults.controller_fatal(m, c.id, "host")
        except TbctlError:
            continue  # not on the bus, or BAR0 unmapped: nothing to read
        if fatal:
            trace = [ln for ln in m.stderr_log.read_text(errors="replace").splitlines()
                     if ln.startswith("pci_nvme_err")][-4:]
            found.append(f"{m.name} {c.id}: controller fatal status (CSTS.CFS=1)"
                         + (f"; QEMU trace: {' | '.join(trace)}" if trace else ""))
        try:
            found.append(f"{m.name} {c.id}: {faults.admin_queue(m, c.id).describe()}")
        except TbctlError as e:
            found.append(f"{m.name} {c.id}: admin queue not read: {e}")
    return found


def blocked_tasks(m: Machine) -> str:
    """The guest's tasks in uninterruptible sleep with their innermost non-generic frame, from
    sysrq-w (the whole dump goes to the kernel log, hence the console log)."""
    try:
        return crash.blocked_tasks(m.ssh.run("echo w > /proc/sysrq-trigger; sleep 1; dmesg", timeout=20).stdout)
    except TbctlError as e:
        return f"not read ({e})"
