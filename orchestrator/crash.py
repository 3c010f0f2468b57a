"""Console and QMP evidence -> crash findings with stable titles (a table of patterns, as
syzkaller's pkg/report does). This wave knows the kernel's fatal reports and GUEST_PANICKED;
titles carry no addresses, pids or timestamps, so one bug has one title in every run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    title: str
    evidence: str


# (pattern, title template); the first group, if any, is the function the report names.
KERNEL_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"Kernel panic - not syncing: ([^\n]*)"), "kernel panic: {0}"),
    (re.compile(r"general protection fault[^\n]*\n(?:[^\n]*\n){0,15}?[^\n]*RIP: \S+:([A-Za-z0-9_.]+)\+"),
     "general protection fault in {0}"),
    (re.compile(r"BUG: unable to handle page fault[^\n]*\n(?:[^\n]*\n){0,15}?[^\n]*RIP: \S+:([A-Za-z0-9_.]+)\+"),
     "BUG: unable to handle page fault in {0}"),
    (re.compile(r"kernel BUG at ([^\n!]*)!"), "kernel BUG at {0}"),
    (re.compile(r"BUG: ([a-z][^\n]*?)(?: in \S+)?\n"), "BUG: {0}"),
    (re.compile(r"Oops: [^\n]*\n(?:[^\n]*\n){0,15}?[^\n]*RIP: \S+:([A-Za-z0-9_.]+)\+"), "Oops in {0}"),
]
_NOISE = re.compile(r"\b0x[0-9a-f]+\b|\b\d{3,}\b|\[\s*\d+\.\d+\]")


def _stable(text: str) -> str:
    return _NOISE.sub("", text).strip().rstrip(".:")


def kernel_findings(console: str) -> list[Finding]:
    found = []
    for pattern, title in KERNEL_PATTERNS:
        for m in pattern.finditer(console):
            found.append(Finding(title.format(*(_stable(g) for g in m.groups())),
                                 console[max(0, m.start() - 200):m.end() + 200]))
    return found


def qmp_findings(events: list[dict[str, Any]]) -> list[Finding]:
    return [Finding("guest panicked (pvpanic GUEST_PANICKED)", str(e.get("data", {})))
            for e in events if e.get("event") == "GUEST_PANICKED"]
