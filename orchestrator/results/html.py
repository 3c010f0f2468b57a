"""The HTML report: one self-contained file (no script, no external style) a person opens from a
CI's artifacts. Run metadata, a row per test (outcome, duration, signature, artifacts link), and
for each test its timeline drawn to scale, so the order of boot, faults, QEMU events and crashes
is seen rather than read; a test that did not pass shows its console excerpt inline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.render import render
from orchestrator.results import repro

WIDTH = 720  # px of a timeline's time axis
LANES = ("phase", "boot", "step", "fault", "qemu", "app", "crash", "hang")  # a row each, top to bottom
LANE_HEIGHT = 14


def write(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tests = [_row(t, path.parent.resolve()) for t in results["tests"]]
    path.write_text(render("report/report.html.j2", run=results, tests=tests, width=WIDTH, lanes=LANES,
                           lane_height=LANE_HEIGHT, counts={k: v for k, v in results.get("counts", {}).items() if v}))


def _row(test: dict[str, Any], here: Path) -> dict[str, Any]:
    kind = test.get("outcome", "infrastructure error")
    art = test.get("artifacts")
    return {"nodeid": test["nodeid"], "outcome": kind, "duration": test.get("duration", 0.0),
            "message": test.get("message") or "", "signature": repro.signature(test) if kind != "passed" else "",
            "known": test.get("known"), "attempts": test.get("attempts") or [], "excerpt": test.get("excerpt") or "",
            "host": test.get("host"),
            "artifacts": art, "link": _link(art, here), "timeline": _timeline(test.get("events") or []) if kind != "skipped" else None}


def _link(art: str | None, here: Path) -> str | None:
    """A relative link when the artifacts are on this machine (beside the report, as a CI keeps
    them), else none: a shard's absolute path on its own machine is shown as text."""
    if not art or not Path(art).is_dir():
        return None
    return Path(os.path.relpath(art, here)).as_posix() + "/"


def _timeline(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The events placed on a time axis: x in px, spans with a width, the rest as ticks."""
    if not events:
        return None
    total = max(max(e["at"], e.get("end", e["at"])) for e in events) or 1.0
    scale = WIDTH / total
    placed = [{**e, "x": round(e["at"] * scale, 1), "w": round(max(1.0, (e["end"] - e["at"]) * scale), 1)
               if "end" in e else None, "lane": LANES.index(e["kind"]) if e["kind"] in LANES else len(LANES) - 1}
              for e in events]
    ticks = [total * i / 4 for i in range(5)]
    return {"events": placed, "total": round(total, 2), "ticks": [(round(t * scale, 1), f"{t:.3g}") for t in ticks]}
