"""What changed since a baseline run (last night's results.json): new failures, fixed tests,
failures that now fail another way, new flakes (passed only on a retry), tests much slower,
tests added or gone. A failure is recognised by the same signature as `tbctl repro` uses, so the
same red is the same red."""

from __future__ import annotations

from typing import Any

from orchestrator.results import outcome, repro

FAILING = outcome.KNOWABLE  # a known failure is not failing: its list says it is expected
MIN_SLOWER = 1.0  # seconds: below this a test is not called slower, whatever the ratio
KINDS = ("new failure", "fails differently", "new flake", "fixed", "slower", "new test", "gone")


def _sig(test: dict[str, Any]) -> str | None:
    return repro.signature(test) if test.get("outcome") in FAILING else None


def compare(base: dict[str, Any], now: dict[str, Any], slower: float) -> dict[str, list[str]]:
    """Each kind of change -> the tests with it, in the current run's order (gone: the baseline's).
    `slower` is a fraction: 0.5 flags a test that took over 1.5 times as long."""
    before = {t["nodeid"]: t for t in base["tests"]}
    current = {t["nodeid"]: t for t in now["tests"]}
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for n, t in current.items():
        b = before.get(n)
        if b is None:
            out["new test"].append(n)
        sig, old = _sig(t), _sig(b) if b else None
        if sig and not old:
            out["new failure"].append(n)
        elif sig and sig != old:
            out["fails differently"].append(n)
        elif old and not sig and t.get("outcome") == "passed":
            out["fixed"].append(n)
        elif flaky(t) and not (b and flaky(b)):
            out["new flake"].append(n)  # passed on a retry (--retries): not failing, not hidden
        if b and t.get("outcome") == b.get("outcome") == "passed" \
                and t["duration"] - b["duration"] >= max(MIN_SLOWER, slower * b["duration"]):
            out["slower"].append(n)
    out["gone"] = [n for n in before if n not in current]
    return out


def exit_code(now: dict[str, Any], changes: dict[str, list[str]]) -> int:
    """A broken run stays 2; otherwise only what is new fails the run."""
    if now["exit_code"] == outcome.EXIT_INFRA:
        return outcome.EXIT_INFRA
    return outcome.EXIT_FAILED if changes["new failure"] or changes["fails differently"] else outcome.EXIT_PASSED


def lines(base_file: str, base: dict[str, Any], now: dict[str, Any], changes: dict[str, list[str]]) -> list[str]:
    """The comparison, for the summary."""
    before = {t["nodeid"]: t for t in base["tests"]}
    current = {t["nodeid"]: t for t in now["tests"]}
    out = [f"since {base_file}: " + (", ".join(f"{len(v)} {k}" for k, v in changes.items() if v) or "no change")]
    out += [f"  {kind:17} {n}  {_detail(kind, current.get(n), before.get(n))}" for kind, ids in changes.items()
            for n in ids]
    return out


def _detail(kind: str, t: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if kind == "gone":
        return f"was {b.get('outcome', '?') if b else '?'}"
    assert t is not None
    if kind == "new test":
        return str(t.get("outcome", "?"))
    if kind == "new failure":
        return repro.signature(t)
    if kind == "new flake":
        return "; ".join(f"attempt {k}: {a['signature']}" for k, a in enumerate(t["attempts"], 1))
    assert b is not None
    if kind == "fails differently":
        return f"{_sig(b)} -> {_sig(t)}"
    if kind == "fixed":
        return f"was {_sig(b)}"
    return f"{b['duration']:.1f} s -> {t['duration']:.1f} s"


def flaky(test: dict[str, Any]) -> bool:
    """Passed, after at least one failed attempt."""
    return test.get("outcome") == "passed" and bool(test.get("attempts"))
