"""Every crash report of a test's slice of each machine's life: the kernel's on the console,
GUEST_PANICKED, QEMU dying, apps' reports in the guest commands' output, the signals its kernel
sent on its own account (orchestrator.report.signals) and core dumps (each with gdb's backtrace in
the test's artifacts), titled by orchestrator.report.crash."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from orchestrator import image
from orchestrator.engine import slices
from orchestrator.errors import DeadlineError, QemuCrashed, TbctlError
from orchestrator.machines import Machine
from orchestrator.report import crash, signals

SYSRQ_KEYS = "9wl"  # all messages to the console (the dumps are KERN_INFO), blocked tasks, CPUs
SYSRQ_WAIT = 5.0  # seconds for the stacks to come out on the console
PVPANIC_WAIT = 3.0  # seconds: the kernel tells pvpanic only after it printed its panic
LINE_WAIT = 2.0  # seconds for a line the console is in the middle of
PANIC_END_WAIT = 10.0  # seconds for a panicking kernel to flush its console (115200 baud, under TCG)
_PANIC_END = re.compile(r"---\[ end Kernel panic")
UNRESPONSIVE_WAIT = 10.0  # seconds a running guest has to run `true` over SSH after a failure
UNRESPONSIVE = "guest unresponsive (no SSH answer while QEMU runs it)"
_LINE_END = re.compile(r"\n")
_COMMAND = re.compile(r"^\$ (.*)\n# exit (-?\d+) in ", re.M)


def of(item: pytest.Item) -> list[tuple[Machine, crash.Finding]]:
    found: list[tuple[Machine, crash.Finding]] = []
    for s in slices.of(item):
        m = s.machine
        m.settle()
        mine = _kernel_findings(m, s.console_mark)
        qmp = m.qmp_channel
        if qmp is not None:
            if any(f.fatal for f in mine) and m.qemu_alive():
                _await_pvpanic(m, s.qmp_mark)
            events = qmp.events(s.qmp_mark)
            if any(e.get("event") == "GUEST_PANICKED" for e in events) and m.qemu_alive():
                _await_panic_end(m, s.console_mark)
            mine = _kernel_findings(m, s.console_mark)  # the report went on meanwhile
            mine += crash.qmp_findings(events)
        if not m.stopped and not m.qemu_alive():
            mine += m.qemu_crash()
        app = _app_findings(m.artifacts / "commands.log", s.commands_mark)
        if not any(f.fatal for f in mine) and m.qemu_alive() and m.ssh_channel is not None:
            app += _signal_findings(m, slices.test_dir(item)) + _core_findings(m, slices.test_dir(item))
        found += [(m, f) for f in mine + crash.one_per_app_crash(app)]
    return found


def hang_stacks(m: Machine, artifacts: Path) -> None:
    """A stuck kernel's blocked tasks (sysrq w) and every CPU's stack (sysrq l), asked for on the
    keyboard (its SSH may be stuck behind the hang), in the test's artifacts with each vCPU's
    state as QEMU holds it; on the console too, right after the report, whose title then names
    where the task waits. The console shows every message from then on: the machine is not
    handed on after a hang anyway."""
    assert m.console is not None
    mark = len(m.console.text)
    try:
        for key in SYSRQ_KEYS:
            m.qmp.sysrq(key, timeout=10)
    except TbctlError as e:
        stacks = f"sysrq {SYSRQ_KEYS} could not be sent: {e}\n"
    else:
        time.sleep(SYSRQ_WAIT)  # printed over a 115200-baud serial console
        stacks = m.console.text[mark:]
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / f"sysrq-{m.topology.name}.txt").write_text(stacks)
    m.save_cpu_states(artifacts / f"cpus-{m.topology.name}.txt")


def unresponsive(item: pytest.Item) -> list[tuple[Machine, crash.Finding]]:
    """The test's machines whose guest stopped answering while QEMU runs them: after a failure
    that no report explains, a guest whose vCPUs stopped taking interrupts (seen under TCG) is
    the finding, and the wait that failed only its consequence. A machine the test paused (QMP
    stop) is not asked."""
    found = []
    for s in slices.of(item):
        m = s.machine
        if m.stopped or not m.qemu_alive() or m.ssh_channel is None or not _running(m):
            continue
        if not m.ssh_alive(timeout=UNRESPONSIVE_WAIT):
            m.save_cpu_states(slices.test_dir(item) / f"cpus-{m.topology.name}.txt")
            tail = "\n".join(m.console.text[s.console_mark:].splitlines()[-20:]) if m.console else ""
            found.append((m, crash.Finding(UNRESPONSIVE, "kernel", True,
                                           f"{m.name}: no command ran over SSH within {UNRESPONSIVE_WAIT:g} s while "
                                           f"QEMU ran the guest; its console last said:\n{tail or '(nothing)'}")))
    return found


def _running(m: Machine) -> bool:
    try:
        return bool(m.qmp.execute("query-status")["status"] == "running")
    except TbctlError:
        return False


def qemu_deaths(item: pytest.Item, exc: BaseException | None) -> list[str]:
    """Titles of the QEMU deaths under a fixture's setup or teardown that failed: its error's
    (QemuCrashed, from whichever channel noticed), and those of the test's machines that died on
    their own (a channel may have failed with another error first)."""
    titles = [exc.title] if isinstance(exc, QemuCrashed) else []
    for s in slices.of(item):
        m = s.machine
        m.settle()
        if not m.stopped and not m.qemu_alive():
            titles += [f.title for f in m.qemu_crash() if qemu_died(f)]
    return list(dict.fromkeys(titles))


def qemu_died(f: crash.Finding) -> bool:
    """QEMU's own death, not a guest panic it reported (GUEST_PANICKED comes from QEMU too)."""
    return f.source == "qemu" and f.title.startswith("QEMU")


def _kernel_findings(m: Machine, mark: int) -> list[crash.Finding]:
    """The console's last line is let finish first: one read mid-way ("Kernel panic - not
    syncing: sy") would title the crash with its fragment."""
    if m.console is None:
        return []
    end = len(m.console.text)
    if end > mark and not m.console.text.endswith("\n"):
        try:
            m.console.wait_for([_LINE_END], timeout=LINE_WAIT, after=end)
        except TbctlError:
            pass  # QEMU gone or the kernel stopped mid-line: the fragment is all there is
    return crash.kernel_findings(m.console.text[mark:])


def _await_pvpanic(m: Machine, qmp_mark: int) -> None:
    """A panicking kernel notifies pvpanic after its report: wait for GUEST_PANICKED a moment,
    so the report is whole however early the console watch ended the test."""
    try:
        m.qmp.wait_event("GUEST_PANICKED", timeout=PVPANIC_WAIT, after=qmp_mark)
    except DeadlineError:
        pass  # no pvpanic device, or the kernel died before reaching it


def _await_panic_end(m: Machine, mark: int) -> None:
    """The kernel tells pvpanic first and flushes what its console held back after (another CPU's
    oops, at times all of it): wait for its last line, "---[ end Kernel panic"."""
    if m.console is None:
        return
    try:
        m.console.wait_for([_PANIC_END], timeout=PANIC_END_WAIT, after=mark)
    except TbctlError:
        pass  # QEMU gone, or a kernel that stopped before its last line: what came is all there is


def _app_findings(log: Path, mark: int) -> list[crash.Finding]:
    text = slices.since(log, mark).decode(errors="replace")
    exits = [crash.exit_finding(int(m[2]), m[1]) for m in _COMMAND.finditer(text)]
    return crash.app_findings(text) + [f for f in exits if f]


def _signal_findings(m: Machine, artifacts: Path) -> list[crash.Finding]:
    """The signals the guest's kernel generated since the last test (the image's trace; read,
    then emptied): all of them in the test's artifacts, those report.signals names as findings."""
    trace = shlex.quote(f"{image.SIGNAL_TRACE}/trace")
    try:
        text = m.ssh.run(f"cat {trace} 2>/dev/null && : > {trace}", timeout=15).stdout
    except TbctlError:
        return []
    sent = signals.parse(text)
    if sent:
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / f"signals-{m.topology.name}.txt").write_text(signals.describe(sent))
    return signals.findings(sent)


def _core_findings(m: Machine, artifacts: Path) -> list[crash.Finding]:
    """Cores the guest's core_pattern left: each gets gdb's `thread apply all bt` in the test's
    artifacts, and is then removed so the next test does not report it again."""
    try:
        names = m.ssh.run(f"ls {image.CORE_DIR}", timeout=15).stdout.split()
    except TbctlError:
        return []
    found = []
    for name in names:
        parts = name.split(".", 3)  # core.PID.SIGNAL.EXE
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        exe, core = parts[3].replace("!", "/"), f"{image.CORE_DIR}/{name}"
        q = shlex.quote
        try:
            bt = m.ssh.run(f"gdb -batch -nx -ex 'thread apply all bt' {q(exe)} {q(core)} 2>&1; rm -f {q(core)}",
                           timeout=120).stdout
        except TbctlError as e:
            bt = f"gdb failed: {e}"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / f"core-{exe.rsplit('/', 1)[-1]}-{parts[1]}.bt.txt").write_text(bt)
        found.append(crash.core_finding(int(parts[2]), exe, bt))
    return found
