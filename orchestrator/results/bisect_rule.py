"""The search `tbctl bisect` makes over a line of commits for a flaky failure, and the rule it
judges one commit by. Pure: no git, no runs; orchestrator.results.bisect feeds it verdicts.

The rule is RULE below (`tbctl bisect --help` prints it).

Terms: a regression is searched from good (clean) to bad (fails), a fix from broken (fails) to
fixed (clean); both are an old end, a new end and the first commit in the new end's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

RULE = """- The failing end is run first, --runs times: its rate p of failures with the signature is what
  the rest is judged against; an end that never shows the signature cannot be bisected. The
  other end is then judged like any commit, and must come out clean.
- A commit *fails* at its first failure with the signature: one is proof, as nothing else makes
  that signature.
- A commit is *clean* only after ln(ALPHA)/ln(1 - p) runs without it (clean_runs): as many as it takes for a
  commit that still had the bug to have shown it with probability 1 - ALPHA (syzkaller's idea:
  keep running while the evidence is weak), and never fewer than --runs. Runs that fail another
  way are neither: they are counted, and do not count towards clean.
- A commit that did not build, or that reached neither verdict within --max-runs, is skipped:
  the search goes around it, and the answer names it when it could be the culprit.
- The answer's doubt: the chance that one of its clean verdicts was a commit with the bug that
  did not show it, 1 - prod(1 - (1 - p)^n) over the clean commits' run counts n.
"""
ALPHA = 0.05  # the chance a commit with the bug is called clean, at the failing end's rate
FAILS, CLEAN, SKIPPED = "fails", "clean", "skipped"
TERMS = {"regression": ("good", "bad"), "fix": ("broken", "fixed")}  # (old end, new end)


def clean_runs(p: float, runs: int, alpha: float = ALPHA) -> int:
    """Clean runs a commit needs to be called clean, if a commit with the bug fails at rate `p`."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"failure rate {p}: must be above 0 and at most 1")
    if p == 1.0:
        return runs
    return max(runs, math.ceil(math.log(alpha) / math.log(1.0 - p)))


def doubt(p: float, clean_counts: list[int]) -> float:
    """The chance that at least one clean verdict hid the bug, at rate `p`."""
    sure = 1.0
    for n in clean_counts:
        sure *= 1.0 - (1.0 - p) ** n
    return 1.0 - sure


@dataclass
class Search:
    """Commits oldest first: index 0 is the old end, the last the new end, both already judged.
    `fixing` is the fix search (the old end fails, the new end is clean)."""

    commits: list[str]
    fixing: bool = False
    verdicts: dict[int, str] = field(default_factory=dict)  # index -> FAILS, CLEAN or SKIPPED

    def __post_init__(self) -> None:
        if len(self.commits) < 2:
            raise ValueError("a search needs an old end and a new end")
        self.verdicts.setdefault(0, self.old_state)
        self.verdicts.setdefault(len(self.commits) - 1, self.new_state)

    @property
    def old_state(self) -> str:
        return FAILS if self.fixing else CLEAN

    @property
    def new_state(self) -> str:
        return CLEAN if self.fixing else FAILS

    def record(self, commit: str, verdict: str) -> None:
        self.verdicts[self.commits.index(commit)] = verdict

    def bounds(self) -> tuple[int, int]:
        """(last index in the old state, first index after it in the new state)."""
        new = min(i for i, v in self.verdicts.items() if v == self.new_state)
        old = max(i for i, v in self.verdicts.items() if v == self.old_state and i < new)
        return old, new

    def next(self) -> str | None:
        """The next commit to judge: the untested one nearest the middle of what is left; None
        when the answer is known (or only skipped commits stand between the bounds)."""
        old, new = self.bounds()
        mid = (old + new) / 2
        open_ = [i for i in range(old + 1, new) if i not in self.verdicts]
        return self.commits[min(open_, key=lambda i: (abs(i - mid), i))] if open_ else None

    def answer(self) -> list[str]:
        """The first commit in the new state; with skipped commits before it, every one of them
        that could be it too (oldest first)."""
        old, new = self.bounds()
        return [self.commits[i] for i in range(old + 1, new + 1) if self.verdicts.get(i) in (SKIPPED, self.new_state)]

    def inconsistent(self) -> list[str]:
        """Commits whose verdict contradicts the bounds (a fail before the last clean commit, in a
        regression): a sign the signature also comes from something else, or the rate moved."""
        old, new = self.bounds()
        return [self.commits[i] for i, v in sorted(self.verdicts.items())
                if (i < old and v == self.new_state) or (i > new and v == self.old_state)]


@dataclass
class Step:
    """One commit's runs as they come in, and its verdict once it has one. A run's signature is
    "" when it passed; `matches` says whether a failure's is the one searched for."""

    needed: int  # clean runs for a clean verdict (clean_runs)
    max_runs: int  # past them without a verdict, the commit is skipped
    matches: Callable[[str], bool]
    runs: int = 0
    failures: int = 0  # with the signature
    others: int = 0  # failures of another kind
    signatures: list[str] = field(default_factory=list)

    def add(self, signature: str) -> None:
        self.runs += 1
        if not signature:
            return
        self.signatures.append(signature)
        if self.matches(signature):
            self.failures += 1
        else:
            self.others += 1

    @property
    def clean(self) -> int:
        return self.runs - self.failures - self.others

    @property
    def verdict(self) -> str | None:
        if self.failures:
            return FAILS
        if self.clean >= self.needed:
            return CLEAN
        return SKIPPED if self.runs >= self.max_runs else None

    def wanted(self) -> int:
        """How many more runs could still decide it (0 once it has a verdict)."""
        return 0 if self.verdict else min(self.needed - self.clean, self.max_runs - self.runs)
