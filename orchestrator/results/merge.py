"""Several runs' results.json (a sharded run's shards, or runs of different suites) as one: the
tests of all, the run metadata of the first, and what is missing: a shard of the split that
no file brings, a shard whose run ended early, a test two files both ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.errors import OUTCOMES, ConfigError
from orchestrator.results import outcome

RUN_KEYS = ("tbctl", "qemu", "image", "topology", "accel", "seed", "jitter", "start", "spdk_dir", "spdk",
            "known_failures")


def load(path: str | Path, where: str = "") -> dict[str, Any]:
    """One results.json; a file that is not one is a one-line error naming it (as `where`)."""
    where = where or str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: not a results.json (not JSON: {e})") from None
    if not isinstance(doc, dict) or "exit_code" not in doc or not isinstance(doc.get("tests"), list) \
            or not all(isinstance(t, dict) and isinstance(t.get("nodeid"), str)
                       and isinstance(t.get("duration"), (int, float)) for t in doc["tests"]):
        raise ConfigError(f"{where}: not a results.json: needs exit_code and tests: [{{nodeid, duration}}, ...]")
    return doc


def problems(docs: dict[str, dict[str, Any]]) -> list[str]:
    """What keeps the merge from being the whole run, one line each (empty: complete)."""
    out: list[str] = []
    shards = {p: d["shard"] for p, d in docs.items() if d.get("shard")}
    if shards and len(shards) != len(docs):
        out.append(f"{', '.join(p for p in docs if p not in shards)}: not a shard, merged with shards")
    plans = {(s["plan"], s["total"], s.get("run")) for s in shards.values()}
    if len(plans) > 1:
        out.append("the shards are of different splits (test lists, shard counts, durations or CI runs): "
                   + "; ".join(f"{p}: shard {s['index']}/{s['total']} of {s['plan']}" for p, s in shards.items()))
    elif plans:
        total = next(iter(plans))[1]
        seen: dict[int, str] = {}
        for p, s in shards.items():
            if s["index"] in seen:
                out.append(f"shard {s['index']}/{total} twice: {seen[s['index']]} and {p}")
            seen[s["index"]] = p
        out += [f"shard {k}/{total} is missing" for k in range(1, total + 1) if k not in seen]
    for p, d in docs.items():
        recorded = {t["nodeid"] for t in d["tests"] if t.get("outcome")}
        planned = d["shard"]["tests"] if d.get("shard") else []
        unrun = [n for n in planned if n not in recorded]
        if unrun:
            out.append(f"{p}: incomplete: {len(unrun)} of its {len(planned)} tests have no result ({unrun[0]}, ...)")
        elif d["exit_code"] == outcome.EXIT_INFRA and not any(t.get("outcome") == "infrastructure error"
                                                              for t in d["tests"]):
            out.append(f"{p}: the run ended with exit code 2 (incomplete or broken; see its summary)")
    owners: dict[str, str] = {}
    for p, d in docs.items():
        for t in d["tests"]:
            if t["nodeid"] in owners:
                out.append(f"{t['nodeid']}: in both {owners[t['nodeid']]} and {p}")
            owners[t["nodeid"]] = p
    return out


def merge(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The merged results.json: shards in their order; exit code 2 when problems() has any."""
    order = sorted(docs, key=lambda p: (docs[p].get("shard") or {}).get("index", 0))
    first = docs[order[0]]
    tests = [t for p in order for t in docs[p]["tests"]]
    found = problems(docs)
    code = outcome.EXIT_INFRA if found else outcome.exit_code({t["nodeid"]: t for t in tests}, 0)
    return {
        **{k: first.get(k) for k in RUN_KEYS},
        "started": min(docs[p].get("started", "") for p in order),
        "duration": max(docs[p].get("duration", 0.0) for p in order),  # shards run side by side
        "exit_code": code, "problems": found,
        "counts": {k: sum(1 for t in tests if t.get("outcome") == k) for k in OUTCOMES},
        "merged": [{"file": str(Path(p).resolve()), "shard": docs[p].get("shard") and
                    {k: docs[p]["shard"][k] for k in ("index", "total", "by", "plan", "run")},
                    "exit_code": docs[p]["exit_code"], "duration": docs[p].get("duration"),
                    "artifacts": docs[p].get("artifacts"), "qemu": docs[p].get("qemu"),
                    "image": docs[p].get("image")} for p in order],
        "tests": tests,
    }
