"""What happened during a test, in order, for the people who read its report: its phases, the
machines it booted, the steps of a script it ran, the faults it fired, QEMU's events, the kernel reports that began on a
console, each in seconds from the start of the test's set-up; and, for a test that did not pass,
the console lines a person reads first. Guest commands that failed or printed an app's report
are placed when they ended. Times are the host's, taken as things happened (QMP
events and console text when they arrived), not re-read from logs afterwards."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from orchestrator.engine import slices
from orchestrator.report import crash

_PHASES = pytest.StashKey[dict[str, tuple[float, float]]]()
_FAULTS = pytest.StashKey[list[tuple[float, str]]]()
_STEPS = pytest.StashKey[list[tuple[str, float, float]]]()
EXCERPT_LINES = 40  # of a console, from its first kernel report on (or its last lines)
QUIET_EVENTS = {"RTC_CHANGE"}  # QEMU events that say nothing about the test
_STAMP = re.compile(r"^\[\s*\d+\.\d+\] ?")  # the kernel's, in a console line
_COMMAND = re.compile(r"^\$ (?P<cmd>.*)\n# exit (?P<rc>-?\d+) in [\d.]+ s, host time (?P<at>[\d.]+)\n", re.M)


def phase(item: pytest.Item, when: str, call: pytest.CallInfo[Any]) -> None:
    item.stash.setdefault(_PHASES, {})[when] = (call.start, call.stop)


def faults(item: pytest.Item, fired: list[tuple[float, str]]) -> None:
    item.stash.setdefault(_FAULTS, []).extend(fired)


def steps(item: pytest.Item, spans: list[tuple[str, float, float]]) -> None:
    """Steps of a script the test ran (name, host time of its first and last line): the spans a
    fault fired at one of its lines is seen beside."""
    item.stash.setdefault(_STEPS, []).extend(spans)


def forget(item: pytest.Item) -> None:
    """A new attempt of the test: its own timeline."""
    keys: tuple[pytest.StashKey[Any], ...] = (_PHASES, _FAULTS, _STEPS)
    for key in keys:
        if key in item.stash:
            del item.stash[key]


def events(item: pytest.Item) -> list[dict[str, Any]]:
    """The test's events, `at` (and a span's `end`) in seconds from its set-up's start."""
    phases = item.stash.get(_PHASES, {})
    if "setup" not in phases:
        return []
    t0 = phases["setup"][0]
    out = [_event("phase", when, start, stop) for when, (start, stop) in phases.items()]
    out += [_event("fault", what, at) for at, what in item.stash.get(_FAULTS, [])]
    out += [_event("step", name, start, end) for name, start, end in item.stash.get(_STEPS, [])]
    offset = time.time() - time.monotonic()  # machine timings are monotonic; events are wall time
    for s in slices.of(item):
        m = s.machine
        launched, ready = m.timings.get("launched"), m.timings.get("ready")
        if launched is not None and ready is not None and launched + offset >= t0:
            how = "restored" if m.restore is not None else "booted"
            out.append(_event("boot", f"{m.name} {how}", launched + offset, ready + offset))
        if m.qmp_channel is not None:
            out += [_event("qemu", _qemu_what(m.name, e), e["host_time"]) for e in m.qmp_channel.events(s.qmp_mark)
                    if e.get("event") not in QUIET_EVENTS and "host_time" in e]
        out += _app_events(m.name, slices.since(m.artifacts / "commands.log", s.commands_mark).decode(errors="replace"))
        if m.console is not None:
            text = m.console.text
            for pattern, kind in ((crash.FATAL_START, "crash"), (crash.HANG_START, "hang")):
                found = pattern.search(text, s.console_mark)
                at = m.console.arrived(found.start()) if found else None
                if found and at is not None:
                    line = _STAMP.sub("", text[found.start():].partition("\n")[0])
                    out.append(_event(kind, f"{m.name}: {line.strip()[:100]}", at))
    return sorted(({**e, "at": round(e["at"] - t0, 3), **({"end": round(e["end"] - t0, 3)} if "end" in e else {})}
                   for e in out), key=lambda e: e["at"])


def excerpt(item: pytest.Item) -> str:
    """Each machine's console from its first kernel report in the test on, else its last lines."""
    parts = []
    for s in slices.of(item):
        m = s.machine
        if m.console is None:
            continue
        text = m.console.text[s.console_mark:]
        starts = [f.start() for p in (crash.FATAL_START, crash.HANG_START) if (f := p.search(text))]
        lines = text[min(starts):].splitlines()[:EXCERPT_LINES] if starts else text.splitlines()[-EXCERPT_LINES:]
        if lines:
            parts.append(f"--- {m.name} console ---\n" + "\n".join(lines))
    return "\n".join(parts)


def _app_events(name: str, log: str) -> list[dict[str, Any]]:
    """Guest commands that failed or whose output holds an app's report (an assertion, a
    sanitizer), when they ended."""
    out = []
    entries = list(_COMMAND.finditer(log))
    for i, c in enumerate(entries):
        output = log[c.end():entries[i + 1].start() if i + 1 < len(entries) else len(log)]
        titles = [f.title for f in crash.app_findings(output)]
        if c["rc"] != "0" or titles:
            what = "; ".join(titles) or f"exit {c['rc']}"
            out.append(_event("app", f"{name}: {what}: {c['cmd'][:80]}", float(c["at"])))
    return out


def _event(kind: str, what: str, at: float, end: float | None = None) -> dict[str, Any]:
    return {"kind": kind, "what": what, "at": at, **({"end": end} if end is not None else {})}


def _qemu_what(name: str, e: dict[str, Any]) -> str:
    data = e.get("data") or {}
    detail = data.get("device") or data.get("id") or data.get("name") or data.get("action") or ""
    return f"{name}: {e['event']}" + (f" {detail}" if detail else "")
