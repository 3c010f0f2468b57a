"""A bisect whose steps' runs fan out over CI machines, in rounds (`tbctl bisect --plan`,
`--shard K/N`, `--merge`; `tbctl ci-template --bisect` writes the pipeline).

In each round every shard builds the commit the bisect judges next, on its own machine, and runs
its share of the runs the step still wants, stopping at its first failure with the signature; it
writes what it saw to parts/round-R/shard-K.json. The merge adds the round's parts up by the rule
the one-machine bisect applies (bisect_rule.Step), keeps the verdict in steps.jsonl, or, when the
runs did not reach one, the round in rounds.jsonl for the next round to go on with. The state
travels between a pipeline's jobs as the bisect's directory (the scheduler's artifacts), so every
job computes the same next commit and the same shares from it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, TbctlError
from orchestrator.results.bisect import SPEC, Bisect, Built, Judged
from orchestrator.results.bisect_rule import SKIPPED, Step
from orchestrator.results.shard import Shard

SEEDS_PER_ROUND = 1 << 10  # a shard's runs are seeded seed + round * this + shard: no two alike


@dataclass(frozen=True)
class Plan:
    """How the pipeline fans out: its shards per round and its rounds, fixed when it is written."""

    shards: int
    rounds: int

    def dump(self, out: Path) -> None:
        (out / "fanout.json").write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, out: Path) -> Plan:
        try:
            return cls(**json.loads((out / "fanout.json").read_text()))
        except OSError:
            raise ConfigError(f"{out}: no fanout.json: not a bisect planned for shards (tbctl bisect --plan)") from None


def min_rounds(commits: int) -> int:
    """Rounds a search over `commits` (both ends included) takes when every step decides in one
    round and none is skipped: the failing end, the clean end, then halving what is between."""
    return 2 + math.ceil(math.log2(max(commits - 1, 1)))


class NotOver(TbctlError):
    """The pipeline's last round is merged and the search is not over."""


class FanOut:
    """The rounds of one planned bisect, in its directory (`bisect.out`)."""

    def __init__(self, bisect: Bisect, plan: Plan):
        self.b, self.plan = bisect, plan
        self.rounds_log = bisect.out / "rounds.jsonl"
        log = self.rounds_log
        self.merged: list[dict[str, Any]] = ([json.loads(x) for x in log.read_text().splitlines()]
                                             if log.exists() else [])  # each merged round, oldest first
        bisect.load()

    @property
    def round(self) -> int:
        """The round running now: one after the last merged."""
        return len(self.merged) + 1

    def step(self, commit: str) -> Step:
        """A commit's step with the runs earlier rounds gave it."""
        step = self.b.step()
        for r in self.merged:
            if r["commit"] == commit:
                for sig in r["signatures"]:
                    step.add(sig)
        return step

    def work(self) -> tuple[str, int] | None:
        """This round's commit and the runs it wants from all shards; None once the search is over."""
        commit = self.b.next_commit()
        if commit is None:
            return None
        return commit, self.step(commit).wanted() if self.b.rate else self.b.s.runs

    def share(self, wanted: int, shard: Shard) -> int:
        """Shard K's runs of `wanted`: an even split, the remainder to the first shards."""
        return wanted // shard.total + (shard.index <= wanted % shard.total)

    def part(self, shard: int) -> Path:
        return self.b.out / "parts" / f"round-{self.round}" / f"shard-{shard}.json"

    def check(self, shard: Shard) -> None:
        if shard.total != self.plan.shards:
            raise ConfigError(f"--shard {shard}: this bisect was planned for {self.plan.shards} shards")

    def run_share(self, shard: Shard) -> dict[str, Any] | None:
        """Build this round's commit and run this shard's share; None when there is nothing left
        to run (the search is over)."""
        self.check(shard)
        work = self.work()
        if work is None:
            return None
        commit, wanted = work
        n, t0 = self.share(wanted, shard), time.monotonic()
        doc: dict[str, Any] = {"round": self.round, "shard": shard.index, "commit": commit, "wanted": wanted,
                               "built": None, "build_seconds": 0.0, "cached": "", "why": "", "unpinned": "",
                               "signatures": []}
        if n:
            where = self.b.step_dir(commit)
            built = self.b.build(commit, where)
            doc.update(built=built.ok, build_seconds=round(built.seconds, 1), cached=built.cached, why=built.why,
                       unpinned=built.unpinned)
            if built.ok:
                mine = where / f"round-{self.round}-shard-{shard.index}"
                mine.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.b.spec, mine / SPEC)  # for the merge's replay bundle, made on another machine
                doc["signatures"] = self.runs(n, mine, shard.index)
        doc["seconds"] = round(time.monotonic() - t0, 1)
        part = self.part(shard.index)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(doc, indent=2) + "\n")
        self.b.say(f"round {self.round}, shard {shard}: {commit[:12]}, {len(doc['signatures'])} of {wanted} runs "
                   f"wanted ({sum(map(bool, doc['signatures']))} failed)" + (f"; not built: {doc['why']}"
                                                                            if doc["built"] is False else ""))
        return doc

    def runs(self, n: int, where: Path, index: int) -> list[str]:
        """Up to `n` runs, `jobs` at once; judging a commit, they stop at the first failure with
        the signature (one decides the step, whatever the other shards see)."""
        sigs: list[str] = []
        batch = 0
        while len(sigs) < n and not (self.b.rate and any(s and self.b.matches(s) for s in sigs)):
            batch += 1
            seed = self.b.s.seed + self.round * SEEDS_PER_ROUND + index + batch * self.plan.shards
            sigs += self.b.runner(self.b.s, self.b.spec, min(n - len(sigs), self.b.s.jobs), seed, where / f"runs-{batch}")
        return sigs

    def merge(self) -> dict[str, Any] | None:
        """This round's parts, added up: the failing end's measure, a verdict, or runs kept for the
        next round. The answer's report once the search is over; NotOver when the plan's last round
        is merged and it is not."""
        work = self.work()
        if work is None:
            return self.b.report()
        commit, _ = work
        r, where = self.round, self.part(1).parent
        parts = [json.loads(p.read_text()) for p in sorted(where.glob("shard-*.json"))]
        if not parts:
            raise TbctlError(f"round {r}: no shard's part in {where}: nothing to merge")
        stale = [p["shard"] for p in parts if p["commit"] != commit]
        if stale:
            raise TbctlError(f"round {r}: shards {stale} ran another commit than {commit[:12]}: "
                             "their bisect directory was not this round's")
        missing = sorted(set(range(1, self.plan.shards + 1)) - {p["shard"] for p in parts})
        if missing:
            self.b.say(f"round {r}: no part from shards {missing} (their job failed?): merging the others'")
        sigs = [s for p in parts for s in p["signatures"]]
        broken = [p for p in parts if p["built"] is False]
        build_s = max(p["build_seconds"] for p in parts)
        built = Built(not broken, build_s, cached=next((p["cached"] for p in parts if p["built"]), ""),
                      unpinned=next((p["unpinned"] for p in parts if p["built"] is not None), ""))
        self.merged.append({"round": r, "commit": commit, "shards": [p["shard"] for p in parts],
                            "signatures": [] if broken else sigs, "build_seconds": build_s,
                            "seconds": max(p["seconds"] for p in parts)})
        with open(self.rounds_log, "a") as f:
            f.write(json.dumps(self.merged[-1]) + "\n")
        if not self.b.rate:
            if broken:
                raise ConfigError(f"the failing end {commit[:12]} does not build: {broken[0]['why']}")
            self.b.measured(sigs, built)
        elif broken:
            self.b.keep(Judged(commit, SKIPPED, build_seconds=build_s, why=f"shard {broken[0]['shard']}: "
                               f"{broken[0]['why']}", cached=built.cached, unpinned=built.unpinned))
        else:
            step = self.step(commit)
            if step.verdict is not None:
                took = sum(x["seconds"] for x in self.merged if x["commit"] == commit)  # its rounds' time
                self.b.keep(self.b.judged(commit, step, built, took))
            else:
                self.b.say(f"round {r}: {commit[:12]} has no verdict after {step.runs} runs: "
                           "the next round runs it again")
        if self.b.next_commit() is None:
            return self.b.report()
        if r >= self.plan.rounds:
            old, new = self.b.search.bounds()
            raise NotOver(f"the pipeline's {self.plan.rounds} rounds are merged and the search is not over: "
                          f"{new - old - 1} commits left between {self.b.commits[old][:12]} and "
                          f"{self.b.commits[new][:12]}; go on with `tbctl bisect --resume {self.b.out}`")
        return None
