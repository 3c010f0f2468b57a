"""A run's tests as the summary prints them (tbctl run's, merge's): a line per test, flagged
when its host was throttled or overloaded, a failure's first line, its attempts, a known
failure's reason. Pure text from results entries: every command can print them without pytest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator.results.junit import known_text

HEAVY_LOAD = 2.0  # load average per CPU above which a test ran on an overloaded host
HEAVY_PRESSURE = 50.0  # % of the last 10 s some task waited for a CPU (PSI "some avg10")
HEAVY_STEAL = 10.0  # % of CPU time the hypervisor under this host took


def test_lines(tests: Iterable[dict[str, Any]]) -> list[str]:
    """One line per test (flagged when the host was throttled or overloaded), a failure's first
    line and a known failure's reason."""
    lines = []
    for r in tests:
        busy = flag(r["host"]) if "host" in r else None
        lines.append(f"{r.get('outcome', '?'):21} {r['duration']:7.1f} s  {r['nodeid']}"
                     + (f"  [host: {busy}]" if busy else ""))
        if r.get("outcome") != "passed" and r.get("message"):
            lines.append(f"{'':21} {r['message'].splitlines()[0][:300]}")
        for k, a in enumerate(r.get("attempts", []), 1):
            lines.append(f"{'':21} {'flaky: ' if r.get('outcome') == 'passed' else ''}attempt {k}: {a['signature']}")
        if r.get("known"):
            k = r["known"]
            lines.append(f"{'':21} known {known_text(k)}")
    return lines


def flag(cond: dict[str, Any]) -> str | None:
    """Why this test's host conditions deserve a look, in a few words, or None."""
    why = []
    if isinstance(cond.get("throttle_events"), int) and cond["throttle_events"] > 0:
        why.append(f"CPU throttled {cond['throttle_events']} times")
    temps = cond.get("temperatures_c")
    if isinstance(temps, dict) and temps and why:
        why.append(f"max {max(temps.values()):.0f} °C")
    load, cpus = cond.get("load"), cond.get("cpus") or 1
    if isinstance(load, list) and load[0] > HEAVY_LOAD * cpus:
        why.append(f"load {load[0]:.1f} on {cpus} CPUs")
    psi = cond.get("pressure_pct")
    if isinstance(psi, dict) and psi.get("cpu", 0) > HEAVY_PRESSURE:
        why.append(f"CPU pressure {psi['cpu']:.0f} %")
    if isinstance(cond.get("steal_pct"), float) and cond["steal_pct"] > HEAVY_STEAL:
        why.append(f"steal {cond['steal_pct']:.0f} %")
    return ", ".join(why) or None
