"""The guest's signal trace (ftrace's signal_generate with the sender's kernel stack; the image's
rc.boot arms it) -> who sent which signal to whom, from where, and the signals that are findings
by themselves, from a table.

Why: fio writing to an NVMe/TCP namespace died of SIGPIPE, a few times in ten runs on a busy
host, while nothing in the test signalled it. Only the sender's stack can tell a kernel that
signals the task submitting its block I/O (its TCP send failed, and nothing asked for
MSG_NOSIGNAL) from a test-bed that signals its own load.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.report.crash import Finding, func

RESULTS = {0: "delivered", 1: "ignored", 2: "already pending", 3: "queue overflow", 4: "info lost"}
# "fio-812 [001] d..1. 123.456789: signal_generate: sig=13 errno=0 code=0 comm=fio pid=812 grp=0 res=0"
_EVENT = re.compile(r"^\s*(?P<sender>.+)-(?P<spid>\d+)\s+\[\d+\]\s+\S+\s+\d+\.\d+: signal_generate: sig=(?P<sig>\d+) "
                    r"errno=-?\d+ code=-?\d+ comm=(?P<comm>.*) pid=(?P<pid>\d+) grp=\d+ res=(?P<res>\d+)\s*$", re.M)
_FRAME = re.compile(r"^ => (\S+)")
_TRACING = re.compile(r"^(?:trace_event_raw_event_\w+|perf_trace_\w+|__traceiter_\w+)$")  # the trace's own frames


@dataclass(frozen=True)
class Signal:
    sig: int
    sender: str  # the task in whose context the kernel generated it
    sender_pid: int
    target: str
    pid: int
    result: int  # RESULTS
    stack: tuple[str, ...]  # the sender's kernel frames, innermost first

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.sig).name
        except ValueError:
            return f"signal {self.sig}"

    @property
    def delivered(self) -> bool:
        return self.result == 0

    def describe(self) -> str:
        own = "its own context" if self.sender_pid == self.pid else f"{self.sender}[{self.sender_pid}]"
        frames = "".join(f"\n    {f}" for f in self.stack) or "\n    (no stack)"
        return f"{self.name} to {self.target}[{self.pid}] from {own}, {RESULTS.get(self.result, self.result)}:{frames}"


def parse(text: str) -> list[Signal]:
    """Every signal_generate event of the trace, with the stack that follows it."""
    found: list[Signal] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _EVENT.match(line)
        if m is None:
            continue
        stack: list[str] = []
        for nxt in lines[i + 1:]:
            if (f := _FRAME.match(nxt)) is not None:
                if not _TRACING.match(f[1]):
                    stack.append(func(f[1]))
            elif stack or "<stack trace>" not in nxt:
                break
        found.append(Signal(int(m["sig"]), m["sender"].strip(), int(m["spid"]), m["comm"], int(m["pid"]),
                            int(m["res"]), tuple(stack)))
    return found


# The network stack's own frames, between a socket's error and whoever was sending.
_NET = re.compile(r"^(?:sk_stream_\w+|tcp_\w+|do_tcp_\w+|__tcp_\w+|sock_\w+|__sock_\w+|kernel_send\w*|inet_\w+|"
                  r"__inet_\w+|tls_\w+|security_socket_\w+)$")
_BLOCK_IO = re.compile(r"^(?:blk_mq_\w+|__blk_mq_\w+|submit_bio\w*|__submit_bio\w*)$")


def _sent_by(s: Signal, error: str) -> str:
    """The first frame past the network stack, outward from `error`: the sender's own code."""
    frames = s.stack[s.stack.index(error) + 1:] if error in s.stack else s.stack
    return next((f for f in frames if not _NET.match(f)), "?")


@dataclass(frozen=True)
class Rule:
    """A signal that is a finding by itself: its number, a test of the sender's stack, a title."""

    sig: int
    matches: Callable[[Signal], bool]
    title: Callable[[Signal], str]


RULES: list[Rule] = [
    # A socket error met while submitting block I/O: a storage transport's socket (nvme-tcp's,
    # whose sends from the submitter's context carry no MSG_NOSIGNAL) signals the task whose I/O
    # it was sending, which never wrote to a socket of its own.
    Rule(signal.SIGPIPE, lambda s: "sk_stream_error" in s.stack and any(_BLOCK_IO.match(f) for f in s.stack),
         lambda s: f"SIGPIPE from the kernel to {s.target} in {_sent_by(s, 'sk_stream_error')}"),
]


def findings(sent: list[Signal]) -> list[Finding]:
    """The delivered signals the table names, one finding per title."""
    found: dict[str, Finding] = {}
    for s in sent:
        rule = next((r for r in RULES if r.sig == s.sig and r.matches(s)), None)
        if rule is not None and s.delivered:
            title = rule.title(s)
            found.setdefault(title, Finding(title, "signal", False, s.describe()))
    return list(found.values())


def describe(sent: list[Signal]) -> str:
    return "\n\n".join(s.describe() for s in sent) + "\n"
