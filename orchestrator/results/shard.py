"""Which tests one shard of a run runs: a split every shard computes alike from the same test
list (and durations), so N machines run disjoint sets whose union is the whole run.

A suite module stays in one shard unless asked otherwise: its VM boots once per module, so
splitting a module boots it twice. Groups go, longest first, to the shard that has the least
so far (durations from an earlier results.json; a test it does not know weighs the median of
those it knows, or 1 when it knows none), so the shards finish together."""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.runspec import SHARD_BY
from orchestrator.errors import ConfigError
from orchestrator.results import merge

BY = SHARD_BY
_SPEC = re.compile(r"(\d+)/(\d+)")
# Where a scheduler says which shard this job is: (index, total, index base); the flag wins.
SCHEDULERS = (("CI_NODE_INDEX", "CI_NODE_TOTAL", 1),  # GitLab `parallel:`
              ("JOB_COMPLETION_INDEX", "TBCTL_SHARD_TOTAL", 0))  # Kubernetes Indexed Job
RUN_IDS = ("TBCTL_RUN_ID", "CI_PIPELINE_ID", "GITHUB_RUN_ID", "BUILD_TAG")  # tbctl's, GitLab's, GitHub's, Jenkins'


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    total: int
    by: str = "module"

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse(text: str, where: str, by: str = "module") -> Shard:
    """'K/N' with 1 <= K <= N; a mistake names `where` (the flag or variable it came from)."""
    m = _SPEC.fullmatch(text.strip())
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise ConfigError(f"{where}: {text!r} is not a shard: K/N with 1 <= K <= N, e.g. 1/4")
    return Shard(int(m[1]), int(m[2]), by)


def from_env(env: Mapping[str, str], by: str = "module") -> Shard | None:
    """TBCTL_SHARD=K/N, else a scheduler's own index and count; None when nothing says."""
    if env.get("TBCTL_SHARD"):
        return parse(env["TBCTL_SHARD"], "TBCTL_SHARD", by)
    for index, total, base in SCHEDULERS:
        if env.get(index):
            if not env.get(total):
                raise ConfigError(f"{index}={env[index]} is set but not {total}: set it to the number of shards")
            k = env[index].strip()
            k = str(int(k) + 1 - base) if k.isdigit() else k
            return parse(f"{k}/{env[total]}", f"{index}/{total}", by)
    return None


def unsharded(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without what says which shard a run is: for runs that are each a whole run (`tbctl
    repro`'s, a bisect's), started from a job that is itself one shard of a pipeline."""
    said = {"TBCTL_SHARD", *(v for index, total, _ in SCHEDULERS for v in (index, total))}
    return {k: v for k, v in env.items() if k not in said}


def run_id(env: Mapping[str, str]) -> str | None:
    """The CI run the shards belong to, as its scheduler names it."""
    return next((env[v] for v in RUN_IDS if env.get(v)), None)


def load_durations(path: str | Path) -> dict[str, float]:
    """Each test's duration in an earlier results.json (a run's or a merge's)."""
    return {t["nodeid"]: float(t["duration"]) for t in merge.load(path, f"--durations {path}")["tests"]}


def _group(nodeid: str, by: str) -> str:
    return nodeid.partition("::")[0] if by == "module" else nodeid


def split(nodeids: list[str], total: int, by: str, durations: Mapping[str, float]) -> list[list[str]]:
    """The tests of each shard (index 0 = shard 1), each in the order given."""
    known = [durations[n] for n in nodeids if n in durations]
    default = statistics.median(known) if known else 1.0
    weight: dict[str, float] = {}
    for n in nodeids:
        g = _group(n, by)
        weight[g] = weight.get(g, 0.0) + durations.get(n, default)
    load, home = [0.0] * total, {}
    for g in sorted(weight, key=lambda g: (-weight[g], g)):
        k = min(range(total), key=lambda i: (load[i], i))
        home[g], load[k] = k, load[k] + weight[g]
    return [[n for n in nodeids if home[_group(n, by)] == k] for k in range(total)]


def plan_id(nodeids: list[str], shard: Shard, durations: Mapping[str, float]) -> str:
    """The same for every shard of one split, and only for them: what the split depends on
    (the test list, the count, the grouping and the durations it was balanced by)."""
    text = "\n".join([f"{shard.total} {shard.by}", *(f"{n} {durations.get(n)}" for n in sorted(nodeids))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
