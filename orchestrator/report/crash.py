"""Text -> crash findings with stable titles, from a table of patterns, as syzkaller's pkg/report
does: the guest kernel's reports (console, dmesg), apps' reports (their output, exit status, core
dumps and gdb backtraces) and QEMU's (GUEST_PANICKED, QEMU itself dying).

A title carries no address, pid, CPU number, timestamp or line number: the same bug gets the same
title in every run, so flakes can be counted by title. Where a report names no function itself,
the title takes the first frame of its call trace that is not generic plumbing (schedule,
wait_for_completion, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SIGNALS = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV"}  # the ones a crash raises


@dataclass(frozen=True)
class Finding:
    title: str
    source: str  # "kernel" | "app" | "core" | "qemu"
    fatal: bool  # the guest cannot go on: the test ends at once rather than at its deadline
    evidence: str
    at: int = 0  # offset in the text it was found in; reports are ordered by it


_TIMESTAMP = re.compile(r"^(?:<\d>)?\[\s*\d+\.\d+\]\s?", re.M)
# A call trace frame; one marked "? " is a stack word that only looks like a return address.
_FRAME = re.compile(r"^\s*(\? )?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+", re.M)
_SUFFIX = re.compile(r"(?:\.(?:part|cold|isra|constprop|llvm|lto_priv)(?:\.\d+)?)+$")
_RIP = re.compile(r"RIP: [0-9a-f]{4}:([A-Za-z_][\w.]*)\+0x")
# Frames that say nothing about the bug: scheduling, waiting, locking, entry code, dump helpers.
_GENERIC_FRAME = re.compile(
    r"^(?:__?schedule\w*|schedule\w*|io_schedule\w*|preempt_schedule\w*|wait_for_completion\w*|msleep\w*|"
    r"__wait_for_common|wait_for_common\w*|do_wait_for_common|\w*_timeout|__mutex_lock\w*|mutex_lock\w*|"
    r"__down\w*|down\w*|rwsem_down\w*|_raw_spin\w*|__raw_spin\w*|native_\w+|dump_stack\w*|show_stack|"
    r"__warn|warn_slowpath\w*|report_bug|handle_bug|exc_\w+|asm_\w+|do_syscall_64|entry_SYSCALL\w*|"
    r"ret_from_fork\w*|kthread|worker_thread|process_one_work|rcu_\w+|print_\w+|panic|__sysvec\w*|"
    r"sysvec_\w+|irq_exit\w*|__irq_exit\w*|__do_softirq|do_softirq\w*|cpuidle\w*|default_idle\w*|"
    r"do_idle|cpu_startup_entry|start_secondary|secondary_startup_64\w*|x86_64_start\w*|"
    r"kasan_\w+|__kasan_\w+|check_memory_region\w*|__asan_\w+|lock_acquire|__might_\w+|"
    r"rest_init|arch_cpu_idle|io_wait_event\w*|blk_mq_get_tag|bit_wait\w*|out_of_line_wait_on_bit\w*|\w+_wait)$")


def func(name: str) -> str:
    """A function name without the compiler's clone suffixes (.part.0, .cold, .isra.0...)."""
    return _SUFFIX.sub("", name)


def plumbing(name: str) -> bool:
    """Whether a kernel frame is generic plumbing (scheduling, waiting, locking, entry code)."""
    return bool(_GENERIC_FRAME.match(func(name)))


def _first_frame(text: str, start: int, limit: int = 3000) -> str | None:
    for m in _FRAME.finditer(text, start, min(len(text), start + limit)):
        if not m.group(1) and not _GENERIC_FRAME.match(func(m.group(2))):
            return func(m.group(2))
    return None


def _blocked_in(text: str, m: re.Match[str], limit: int = 30000) -> str | None:
    """Where the task a hung-task report names waits: its own stack, in the report or in a later
    list of blocked tasks (sysrq w) when the report's stack stayed off the console (`quiet`)."""
    task = re.compile(rf"task:{re.escape(m[1])}\s+state:\S+\s+stack:\s*\d+\s+pid:\s*{m[2]}\b")
    own = task.search(text, m.end(), min(len(text), m.end() + limit))
    return _first_frame(text, own.end()) if own else _first_frame(text, m.start())


def _rip(text: str, start: int, limit: int = 2500) -> str | None:
    m = _RIP.search(text, start, min(len(text), start + limit))
    return func(m.group(1)) if m else None


def _where(text: str, start: int) -> str:
    """The function a report is about: its RIP, else its first meaningful frame."""
    where = _rip(text, start)
    if where is None or _GENERIC_FRAME.match(where):
        where = _first_frame(text, start) or where
    return f" in {where}" if where else ""


_NOISE = re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{8,}\b|\b\d+\b")


def _stable(s: str) -> str:
    """A free-text part of a title without numbers or addresses (panic messages, BUG kinds)."""
    return re.sub(r"\s+", " ", _NOISE.sub("", s)).strip(" .:,;")


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    title: Callable[[re.Match[str], str], str]  # (match, whole text) -> title
    fatal: bool


def _rule(regex: str, title: Callable[[re.Match[str], str], str], fatal: bool) -> Rule:
    return Rule(re.compile(regex, re.M), title, fatal)


KERNEL_RULES: list[Rule] = [
    _rule(r"^BUG: KASAN: ([\w-]+) in ([A-Za-z_][\w.]*)", lambda m, t: f"KASAN: {m[1]} in {func(m[2])}", False),
    _rule(r"^BUG: kernel NULL pointer dereference",
          lambda m, t: "BUG: kernel NULL pointer dereference" + _where(t, m.start()), True),
    _rule(r"^BUG: unable to handle page fault", lambda m, t: "BUG: unable to handle page fault" + _where(t, m.start()),
          True),
    _rule(r"^general protection fault", lambda m, t: "general protection fault" + _where(t, m.start()), True),
    _rule(r"^kernel BUG at (\S+?)(?::\d+)?!", lambda m, t: "kernel BUG" + (_where(t, m.start()) or f" at {m[1]}"),
          True),
    _rule(r"^watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s!",
          lambda m, t: "BUG: soft lockup" + _where(t, m.start()), False),
    _rule(r"^BUG: (?!KASAN|kernel NULL|unable to handle|soft lockup)([a-z][\w -]*?)(?::| at | in |$)",
          lambda m, t: f"BUG: {_stable(m[1])}" + _where(t, m.start()), False),
    _rule(r"^WARNING: CPU: \d+ PID: \d+ at \S+ ([A-Za-z_][\w.]*)\+0x", lambda m, t: f"WARNING in {func(m[1])}", False),
    _rule(r"^INFO: task (\S+):(\d+) blocked for more than \d+ seconds",
          lambda m, t: "INFO: task hung" + (f" in {f}" if (f := _blocked_in(t, m)) else ""), False),
    _rule(r"^(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected stalls? on CPUs?",
          lambda m, t: "INFO: rcu detected stall" + _where(t, m.start()), False),
    _rule(r"^Oops: ", lambda m, t: "Oops" + _where(t, m.start()), True),
    _rule(r"^Kernel panic - not syncing: (.*)$", lambda m, t: f"kernel panic: {_stable(m[1])}", True),
]

APP_RULES: list[Rule] = [
    # glibc: "prog: file.c:123: func: Assertion `expr' failed."
    _rule(r"^(?!\S*qemu-system-)[^\s:]+: [^\s:]+:\d+: (?:[^:\n]*? )?([A-Za-z_][\w:~]*)(?:\([^)\n]*\))?: Assertion `(.+)' failed\.",
          lambda m, t: f"Assertion `{m[2]}' failed in {m[1]}", False),
    # what a shell prints for a child that died: dash/busybox "Aborted (core dumped)", bash
    # "bash: line 1:  1234 Segmentation fault      (core dumped) ./app"
    _rule(r"^(?:\S+: line \d+: +\d+ )?(Segmentation fault|Aborted|Bus error|Illegal instruction|"
          r"Floating point exception)(?: +\(core dumped\))?(?: +(\S+).*)?$",
          lambda m, t: _SHELL_SIGNALS[m[1]] + (f" in {_program(m[2])}" if m[2] else ""), False),
    _rule(r"^timeout: the monitored command dumped core$", lambda m, t: "core dumped", False),
    # the kernel's one-line note of a user fault (dmesg): "prog[pid]: segfault at ... in lib.so[...]"
    _rule(r"^([\w.-]+)\[\d+\]: segfault at \S+ ip \S+ sp \S+ error \d+(?: in ([\w.+-]+?)\[)?",
          lambda m, t: f"SIGSEGV in {m[1]}" + (f" ({m[2]})" if m[2] else ""), False),
]

_SHELL_SIGNALS: dict[str, str] = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
                                  "Illegal instruction": "SIGILL", "Floating point exception": "SIGFPE"}


def _program(word: str) -> str:
    return word.strip("\"'").rsplit("/", 1)[-1]


QEMU_RULES: list[Rule] = [
    _rule(r"^\S*qemu-system-\w+: \S+:\d+: ([A-Za-z_]\w*): Assertion `(.+)' failed\.",
          lambda m, t: f"QEMU: Assertion `{m[2]}' failed in {m[1]}", True),
    _rule(r"^\*\*\nERROR:\S+:\d+:([A-Za-z_]\w*): (.*)$", lambda m, t: f"QEMU: {_stable(m[2])} in {m[1]}", True),
    # glibc's own word that QEMU's heap is corrupted (a use-after-free's write, found later by
    # malloc): the abort's frames only say which allocation happened to notice.
    _rule(r"^((?:malloc|free|realloc|malloc_consolidate|_int_malloc|_int_free)\(\): [^\n]+|double free or "
          r"corruption[^\n]*|corrupted size vs\. prev_size[^\n]*|corrupted double-linked list[^\n]*)$",
          lambda m, t: f"QEMU heap corrupted: {m[1]}", True),
]


def clean(text: str) -> str:
    """Console or dmesg text without timestamps and carriage returns."""
    return _TIMESTAMP.sub("", text.replace("\r\n", "\n"))


def scan(text: str, rules: list[Rule], source: str) -> list[Finding]:
    """Every report the rules find, in the order they appear. One report often matches several
    rules (a page fault prints "BUG: unable to handle ...", then "Oops:", then "Kernel panic -
    not syncing: Fatal exception"): a match within a few lines after another one is part of it."""
    found: list[Finding] = []
    for rule in rules:
        for m in rule.pattern.finditer(text):
            found.append(Finding(rule.title(m, text), source, rule.fatal,
                                 text[max(0, m.start() - 300):m.end() + 1500], m.start()))
    found.sort(key=lambda f: f.at)
    reports: list[Finding] = []
    for f in found:
        prev = reports[-1] if reports else None
        if prev and f.at - prev.at < 2000 and text.count("\n", prev.at, f.at) < 40 and \
                (f.title.startswith(("Oops", "kernel panic: Fatal exception")) or
                 f.title == "core dumped" or f.title.startswith("SIG")):
            if f.fatal and not prev.fatal:
                reports[-1] = Finding(prev.title, prev.source, True, prev.evidence, prev.at)
            continue
        reports.append(f)
    return reports


def kernel_findings(text: str) -> list[Finding]:
    return scan(clean(text), KERNEL_RULES, "kernel")


def app_findings(text: str) -> list[Finding]:
    return scan(clean(text), APP_RULES, "app")


def exit_finding(rc: int, cmd: str) -> Finding | None:
    """A guest command that died of a crash signal (the shell's 128+N)."""
    sig = SIGNALS.get(rc - 128) if rc > 128 else None
    if sig is None:
        return None
    words = [w for w in cmd.split() if w not in ("exec", "stdbuf") and not w.startswith("-")]
    return Finding(f"{sig} in {_program(words[0]) if words else '?'}", "app", False, f"exit status {rc}: {cmd[:300]}")


_BT_FRAME = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?([A-Za-z_][\w:~<>]*) \(", re.M)
_BT_SKIP = re.compile(r"^(?:__GI_\w+|__pthread_kill\w*|pthread_kill\w*|raise|gsignal|abort|__assert_fail\w*|"
                      r"__libc_\w+|__restore_rt|__pthread_\w+|_start|start_thread|clone\w*|__clone\w*|"
                      r"__sigaction|__kernel_vsyscall)$")


def core_finding(signal: int, exe: str, backtrace: str) -> Finding:
    """A core dump, titled by its signal and the crashing thread's first own frame."""
    sig = SIGNALS.get(signal, f"signal {signal}")
    # gdb numbers the core's first thread, the one the signal killed, 1 (and lists it last).
    blocks = re.split(r"^(?=Thread \d+ )", backtrace, flags=re.M)
    crashing = next((b for b in blocks if b.startswith("Thread 1 ")), backtrace)
    frames = [m.group(1) for m in _BT_FRAME.finditer(crashing)]
    own = next((f for f in frames if not _BT_SKIP.match(f)), None)
    prog = exe.rsplit("/", 1)[-1]
    return Finding(f"{sig} in {own}" if own else f"{sig} in {prog}", "core", False, backtrace[:4000])


def one_per_app_crash(findings: list[Finding]) -> list[Finding]:
    """An app that failed an assertion also aborted, dumped core and exited 134: one crash. Keep
    the most telling title: the assertion, else the core's backtrace, else the exit status or
    the shell's note."""
    asserted = any(f.title.startswith("Assertion") for f in findings)
    cored = {f.title.split()[0] for f in findings if f.source == "core"}
    kept = []
    for f in findings:
        sig = f.title.split()[0] if f.title.startswith("SIG") else None
        if sig and ((asserted and sig == "SIGABRT") or (f.source == "app" and sig in cored)):
            continue
        if f.title == "core dumped" and (asserted or cored):
            continue
        kept.append(f)
    return kept


def qmp_findings(events: list[dict[str, Any]]) -> list[Finding]:
    return [Finding("guest panicked (pvpanic GUEST_PANICKED)", "qemu", True, str(e.get("data", {})))
            for e in events if e.get("event") == "GUEST_PANICKED"]


def qemu_findings(stderr: str, returncode: int | None, backtrace: str = "", frames: list[Any] | None = None,
                  commands: list[str] | None = None) -> list[Finding]:
    """QEMU died on its own: its assertion or error, else its signal and the first frame of its
    own code in the crashing thread (`qemu_core.Frame`s from its core), else how it exited. The
    evidence: the backtrace, or QEMU's stderr tail and the last QMP commands sent."""
    evidence = backtrace[:6000] if backtrace else (
        f"QEMU's stderr (tail):\n{stderr[-2000:]}\nlast QMP commands:\n" + "\n".join(commands or ["none"]))
    found = scan(stderr, QEMU_RULES, "qemu")
    if found:
        return [Finding(found[0].title, "qemu", True, found[0].evidence + "\n" + evidence)]
    if returncode is not None and returncode < 0:
        sig = SIGNALS.get(-returncode, f"signal {-returncode}")
        own = [f for f in frames or [] if f.own]
        named = next((f.name for f in own if f.name != "??"), None)
        # A frame without a symbol (a static function of a stripped build) is named by its file
        # offset, with the first named frame above it for a reader: both stable for one build.
        where = "" if not own else f" in {own[0].name}" if own[0].name != "??" else \
            f" at {own[0].where}" + (f" under {named}" if named else "")
        return [Finding(f"QEMU {sig}{where}" if where else f"QEMU died of {sig}", "qemu", True, evidence)]
    return [Finding(f"QEMU exited unexpectedly (status {returncode})", "qemu", True, evidence)]


def blocked_tasks(dmesg: str) -> str:
    """The tasks of the newest sysrq-w dump (uninterruptible sleep), each with its first frame
    that is not generic plumbing: "kworker/u4:1 in uio_unregister_device"."""
    dump = clean(dmesg).rsplit("sysrq: Show Blocked State", 1)
    if len(dump) < 2:
        return "no sysrq-w dump in the kernel log"
    blocked = [b for b in re.split(r"^(?=task:)", dump[1], flags=re.M) if b.startswith("task:") and "state:D" in b]
    return "; ".join(f"{b.split()[0].removeprefix('task:')} in {_first_frame(b, 0) or '?'}" for b in blocked) or "none"


def title(text: str) -> str | None:
    """The title of the first report in `text`, kernel or app (the corpus test's question)."""
    text = clean(text)
    found = scan(text, KERNEL_RULES, "kernel") + scan(text, APP_RULES, "app") + scan(text, QEMU_RULES, "qemu")
    return min(found, key=lambda f: f.at).title if found else None


# The start of a fatal kernel report in raw console text (lines carry printk timestamps), and
# what ends one: the panic line, or the "---[ end" trailer.
FATAL_START = re.compile(r"^(?:\[\s*\d+\.\d+\] ?)?(?:" + "|".join(
    r.pattern.pattern.lstrip("^") for r in KERNEL_RULES if r.fatal) + ")", re.M)
REPORT_END = re.compile(r"---\[ end |Kernel panic - not syncing")
# A kernel stuck, not dead: its reports, and the titles the table gives them.
HANG_START = re.compile(r"^(?:\[\s*\d+\.\d+\] ?)?(?:INFO: task \S+:\d+ blocked for more than|"
                        r"watchdog: BUG: soft lockup|(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected stall)", re.M)
HANG_TITLES = ("INFO: task hung", "BUG: soft lockup", "INFO: rcu detected stall")
