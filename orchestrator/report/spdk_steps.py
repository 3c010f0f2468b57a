"""The steps of an SPDK test script, read from its output as SPDK's test/common/autotest_common.sh
writes it (v24.01 to v26.01): `run_test NAME CMD...` prints "START TEST NAME" and, once CMD
returned, bash's `time` lines (real/user/sys) and "END TEST NAME", each between lines of stars,
and nests NAME into `test_domain` (dot-joined: "nvme.nvme_reset"); a command that fails under
errexit runs the ERR trap, which prints "========== Backtrace start: ==========" ... "==========
Backtrace end ==========" (frames "in FILE:LINE -> FUNC([args])" with the source around them), and
the script exits: no END TEST for any step it was in. xtrace lines (PS4: time, test_domain, FILE@LINE)
are commands, never evidence. Text in, steps out: no I/O."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from orchestrator.report import crash

CRASHED = "guest crashed"
_START = re.compile(r"^START TEST (\S+)\s*$")
_END = re.compile(r"^END TEST (\S+)\s*$")
_REAL = re.compile(r"^real\s+(\d+)m(\d+(?:\.\d+)?)s\s*$")  # bash's `time`, which run_test wraps CMD in
_BT_START = "========== Backtrace start: =========="
_BT_END = "========== Backtrace end =========="
_XTRACE = re.compile(r"^\s*\d\d:\d\d:\d\d\s+(?:\S+\s+)?--\s+\S+@\d+\s+--\s+[#$]")
# What an error looks like in the scripts' and apps' output, most telling first: the line a failed
# step's message is made of (SPDK's apps log "*ERROR*"; the scripts "ERROR:"; bash its own words;
# last, a complaint in plain words, as test/nvme/startup's "Too long time for initialization.").
ERROR_LINES = [re.compile(p) for p in (
    r"\*ERROR\*", r"Assertion .* failed", r"\bERROR\b", r"\bFailure:", r"\bFAILED\b", r"command not found",
    r"No such file or directory", r"\b[Ee]rror\b", r"\bfail(?:ed|ure)?\b",
    r"\b(?:[Cc]annot|[Cc]ould not|[Uu]nable to|[Ii]nvalid|[Uu]nexpected|[Mm]ismatch|[Tt]imed out|"
    r"[Tt]oo (?:long|many|few|much|large|small|slow))\b",
)]


@dataclass(frozen=True)
class Step:
    name: str  # as test_domain names it: the enclosing steps' names and its own, dot-joined
    status: str  # passed (END TEST), failed (a backtrace while it ran), unfinished (the output stops inside
    # it), or CRASHED (an app's crash report in its output, whatever the script made of it)
    first: int  # its START TEST line (index into the lines read)
    last: int  # its END TEST line, or the last line read
    seconds: float | None = None  # bash's `time` of its command; None when it did not finish
    error: str = ""  # a failed step's error line: the last one before its backtrace
    backtrace: str = ""  # the backtrace block of the innermost failed step


def steps(lines: list[str]) -> list[Step]:
    """Every step that started, in the order they started; a failure's backtrace goes to the
    innermost step it was printed in, and every step around it failed with it."""
    out: dict[int, Step] = {}
    stack: list[tuple[str, int]] = []  # (dotted name, its START line)
    failed: list[int] = []  # the failed steps' START lines, innermost first: whose `time` comes next
    real: float | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _START.match(line):
            stack.append((f"{stack[-1][0]}.{m[1]}" if stack else m[1], i))
        elif (m := _END.match(line)) and stack and stack[-1][0].rsplit(".", 1)[-1] == m[1]:
            name, first = stack.pop()
            out[first] = Step(name, "passed", first, i, real)
            real = None
        elif m := _REAL.match(line):
            real = int(m[1]) * 60 + float(m[2])
            if failed:  # bash's `time` still reports each command the failure ended, innermost first
                first = failed.pop(0)
                out[first] = dataclasses.replace(out[first], seconds=real)
        elif line.strip() == _BT_START and stack:
            end = _block_end(lines, i)
            name, first = stack[-1]
            out[first] = Step(name, "failed", first, end, error=_error(lines[first:i]),
                              backtrace="\n".join(lines[i:end + 1]))
            for outer, start in stack[:-1]:
                out[start] = Step(outer, "failed", start, end, error=f"step {name} failed")
            failed = [start for _, start in reversed(stack)]
            stack = []
            i = end
        i += 1
    for name, first in stack:
        out[first] = Step(name, "unfinished", first, len(lines) - 1)
    return [out[k] for k in sorted(out)]


def _block_end(lines: list[str], start: int) -> int:
    """The line that ends the backtrace block starting at `start` (the last line, if cut short)."""
    return next((j for j in range(start, len(lines)) if lines[j].strip() == _BT_END), len(lines) - 1)


def _error(lines: list[str]) -> str:
    """The most telling error line (by ERROR_LINES' order), the last of its kind: nearest the failure."""
    evidence = [ln.strip() for ln in lines  # run_test's own lines (stars, START TEST) say nothing of the failure
                if ln.strip().strip("*") and not _XTRACE.match(ln) and not _START.match(ln.strip())]
    for pattern in ERROR_LINES:
        hits = [ln for ln in evidence if pattern.search(ln)]
        if hits:
            return hits[-1][:500]
    return evidence[-1][:500] if evidence else ""


_FRAME = re.compile(r"^in (\S+):(\d+) -> (\w+)\(")
_NEAR = 60  # lines before a backtrace that its error line is looked for in


@dataclass(frozen=True)
class Failure:
    """A script's failure as its last backtrace tells it (in a step or not)."""

    where: str  # "FILE:LINE in FUNC", the innermost frame
    error: str  # the most telling error line just before it
    backtrace: str

    def __str__(self) -> str:
        return f"at {self.where}" + (f": {self.error}" if self.error else "")


def failure(lines: list[str]) -> Failure | None:
    """The last backtrace in the output, where it puts the failure and the error line before it;
    None if the script printed none (it failed without errexit, or was killed)."""
    starts = [i for i, ln in enumerate(lines) if ln.strip() == _BT_START]
    if not starts:
        return None
    i = starts[-1]
    end = _block_end(lines, i)
    frame = next((m for ln in lines[i:end] if (m := _FRAME.match(ln.strip()))), None)
    where = f"{frame[1]}:{frame[2]} in {frame[3]}" if frame else "an unknown place"
    return Failure(where, _error(lines[max(0, i - _NEAR):i]), "\n".join(lines[i:end + 1]))


# An app's own verdict that its exit status does not carry: SPDK's test/nvme/doorbell_aers prints
# "Failure: CASE" for a case that failed and exits 0 all the same, and its step passes in SPDK's CI.
APP_FAILURES = [re.compile(r"^Failure: (\w+)\s*$")]


def app_verdicts(lines: list[str], found: list[Step]) -> list[Step]:
    """`found` with each passed step failed whose own lines (not a nested step's) hold an app's
    failure verdict, and the steps around it failed with it."""
    failing: dict[str, str] = {}
    for i, line in enumerate(lines):
        if any(p.match(line.strip()) for p in APP_FAILURES) and (step := _innermost(found, i)) is not None:
            failing.setdefault(step.name, line.strip())
    out = []
    for s in found:
        inside = sorted(n for n in failing if n.startswith(s.name + "."))
        if s.status == "passed" and s.name in failing:
            s = dataclasses.replace(s, status="failed", error=f"{failing[s.name]} (its app exited 0 all the same)")
        elif s.status == "passed" and inside:
            s = dataclasses.replace(s, status="failed", error=f"step {inside[0]} failed")
        out.append(s)
    return out


def _innermost(found: list[Step], i: int) -> Step | None:
    """The step line `i` was printed in (not its START line), the innermost of those around it."""
    inner = [s for s in found if s.first < i <= s.last]
    return max(inner, key=lambda s: s.first) if inner else None


def app_crashes(lines: list[str], found: list[Step]) -> list[Step]:
    """`found` with each step in whose own lines an app's crash report is (an assertion, a signal
    its shell reports, a segfault: report.crash's app rules) `guest crashed`, titled by it, its
    report as its backtrace, and the steps around it crashed with it: even one that passed, as
    SPDK v24.09's shutdown.sh passes nvmf_shutdown_tc4 (`wait $perfpid || true`) after its
    spdk_nvme_perf failed an assertion. A crash between steps stays the script's."""
    own: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if (step := _innermost(found, i)) is not None and not _XTRACE.match(line):
            own.setdefault(step.name, []).append(line)
    crashed: dict[str, crash.Finding] = {}
    for name, text in own.items():
        reports = crash.one_per_app_crash(crash.app_findings("\n".join(text)))
        if reports:
            crashed[name] = reports[0]
    out = []
    for s in found:
        inside = sorted(n for n in crashed if n.startswith(s.name + "."))
        if s.name in crashed:
            f = crashed[s.name]
            s = dataclasses.replace(s, status=CRASHED, error=f.title,
                                    backtrace="\n".join(filter(None, [f.evidence, s.backtrace])))
        elif inside:
            s = dataclasses.replace(s, status=CRASHED, error=f"{crashed[inside[0]].title} (in step {inside[0]})")
        out.append(s)
    return out
