"""A run's results: one record per test (outcome, duration, message, artifacts, machines
discarded), written to results.json with the run's metadata (tbctl, QEMU, image, topology,
accelerator, seed), and the summary printed at the end."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import __version__
from orchestrator.engine.deadline import GuestCrashed
from orchestrator.engine.session import Run
from orchestrator.errors import OUTCOMES, TbctlError
from orchestrator.results import outcome
from orchestrator.results.lines import test_lines
from orchestrator.vm import qemu_binary


@dataclass
class Verdict:
    """What is known of one test so far."""

    kind: str | None = None  # the worst outcome its phases gave so far
    diagnosis: str = ""  # from QEMU's side, when a wait never ended
    crashes: str = ""  # "guest crashed: TITLE; ..." or "qemu crashed: ..."
    caught: bool = False  # the body caught its own deadline
    known: dict[str, Any] | None = None  # the known-failure rule its body's failure matched


VERDICT = pytest.StashKey[Verdict]()


def verdict(item: pytest.Item) -> Verdict:
    return item.stash.setdefault(VERDICT, Verdict())


def entry(run: Run, item: pytest.Item) -> dict[str, Any]:
    """This test's record in the run's results."""
    return run.results.setdefault(item.nodeid, {"nodeid": item.nodeid, "duration": 0.0})


def add_phase(run: Run, item: pytest.Item, rep: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
    """Duration and the first failure's message (with the crash titles and diagnosis), or a skip's reason."""
    e, v = entry(run, item), verdict(item)
    if rep.skipped and "message" not in e:
        e["message"] = _skip_reason(rep)
    if not (rep.failed or rep.when == "call"):
        return
    e["duration"] = round(e["duration"] + rep.duration, 3)
    if not rep.failed or "message" in e:
        return
    e["message"] = str(rep.longrepr) if rep.when == "call" and v.caught else _message(call)
    if call.excinfo is not None and isinstance(call.excinfo.value, TbctlError):
        e["error"] = call.excinfo.value.fields()  # its parts, for a tool that acts on them
    if v.crashes:  # the watcher's early word is the crash itself
        ended = call.excinfo is not None and call.excinfo.type is GuestCrashed
        e["message"] = v.crashes if ended or not e["message"] else v.crashes + "\n" + e["message"]
    if v.diagnosis:
        e["message"] += "\ndiagnosis: " + v.diagnosis


def _skip_reason(rep: pytest.TestReport) -> str:
    """pytest keeps a skip's reason as (file, line, "Skipped: why")."""
    if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        return str(rep.longrepr[2]).removeprefix("Skipped: ")
    return str(rep.longrepr or "skipped")


def _message(call: pytest.CallInfo[None]) -> str:
    if call.excinfo is None:
        return ""
    return f"{call.excinfo.typename}: {call.excinfo.value}"[:4000]


def write(run: Run, session_status: int, path: Path) -> int:
    """results.json; returns the run's exit code."""
    for e in run.results.values():
        if "outcome" not in e:  # the run ended inside it (Ctrl-C, SIGTERM): what the exit code counts it as
            e["outcome"] = "infrastructure error"
            e.setdefault("message", "the run was interrupted during this test, before it had an outcome"
                         if session_status == pytest.ExitCode.INTERRUPTED else
                         "the run ended during this test, before it had an outcome")
    part = run.shard_record
    empty_shard = part is not None and not part["tests"]  # more shards than groups: nothing to do is fine
    code = outcome.EXIT_PASSED if empty_shard else outcome.exit_code(run.results, session_status)
    s, env = run.settings, run.env
    img = env.image.manifest if env else {}
    doc = {
        "tbctl": __version__, "qemu": qemu_binary.current().record(),
        "image": {k: img.get(k) for k in ("name", "digest", "kernel")},
        "topology": s.topology.source, "accel": env.accel if env else None, "seed": s.seed, "jitter": s.spec.jitter,
        "start": run.start, "spdk_dir": str(s.spec.spdk_dir) if s.spec.spdk_dir else None,
        "spdk": run.versions()["spdk"], "known_failures": s.known.source, "shard": part,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(run.started)),
        "duration": round(time.time() - run.started, 2), "exit_code": code,
        "counts": {k: sum(1 for r in run.results.values() if r.get("outcome") == k) for k in OUTCOMES},
        "tests": list(run.results.values()), "artifacts": str(s.artifacts),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return code


def summary(run: Run) -> list[str]:
    """The summary's lines: the QEMU, the shard, then each test's."""
    lines = [qemu_binary.current().describe()]
    if run.shard_record:
        s = run.shard_record
        lines.append(f"shard {s['index']}/{s['total']} (by {s['by']}): {len(s['tests'])} of {s['of']} tests")
    kept = [f"kept up after {test}: {name}   get in: tbctl ssh {name}   drop: tbctl down {name}"
            for name, test in run.kept.items()]
    return lines + test_lines(run.results.values()) + kept
