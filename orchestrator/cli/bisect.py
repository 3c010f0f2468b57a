"""`tbctl bisect`: which commit of the user's SPDK repository made (or fixed) a flaky failure."""

from __future__ import annotations

import argparse
import dataclasses
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.cli.argtypes import SECONDS, ranged
from orchestrator.cli.ci import MAX_SHARDS
from orchestrator.cli.common import artifacts_root, resolve
from orchestrator.cli.runs import cold_opt, run_opts, run_spec, run_target, with_scripts
from orchestrator.config import runspec
from orchestrator.config.runspec import RunSpec
from orchestrator.errors import ConfigError
from orchestrator.image import Image
from orchestrator.results import bisect, bisect_fanout, bisect_rule, shard

ASKED = "asked.json"  # a planned bisect's run options, as its plan was given them
SPARE_ROUNDS = 4  # a planned pipeline's rounds beyond the fewest: for skipped and undecided commits
DEFAULT_BUILD = "./configure --target-arch=x86-64-v2 --disable-unit-tests && make -j$(nproc)"


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("bisect", help="the first commit of your SPDK repository where a flaky failure starts (or stops)",
             formatter_class=argparse.RawDescriptionHelpFormatter, epilog="How a commit is judged:\n" + bisect_rule.RULE)
    sp.add_argument("target", nargs="?", metavar="SUITE[::TEST]", help="the test: a suite test, or spdk:PATH")
    sp.add_argument("--repo", metavar="DIR", help="your SPDK git repository (only read: tbctl checks out its own clone)")
    sp.add_argument("--good", metavar="REF", help="a commit without the failure (a regression search)")
    sp.add_argument("--bad", metavar="REF", help="a later commit with it")
    sp.add_argument("--broken", metavar="REF", help="a commit with the failure (a search for its fix)")
    sp.add_argument("--fixed", metavar="REF", help="a later commit without it")
    sp.add_argument("--signature", metavar="GLOB", help="the failure (a glob over `tbctl repro`'s signatures); "
                                                        "default: the failing end's most common")
    sp.add_argument("--runs", type=ranged(int, 1, 1000), default=10, metavar="N",
                    help="runs at the failing end, and the fewest a clean verdict needs (10)")
    sp.add_argument("--max-runs", type=ranged(int, 1, 10_000), metavar="N",
                    help="a commit with no verdict after N runs is skipped (default: twice what a clean verdict needs)")
    sp.add_argument("--build", default=DEFAULT_BUILD, metavar="CMD",
                    help=f"how a commit is built, in the guest image's userland (default: {DEFAULT_BUILD})")
    sp.add_argument("--build-timeout", type=SECONDS, default=7200, metavar="S", help="per build (7200)")
    sp.add_argument("--jobs", "-j", type=ranged(int, 1, 64), default=1, metavar="J", help="runs at once (1)")
    sp.add_argument("--seed", type=ranged(int, 0, (1 << 31) - 1), help="the runs' seed")
    sp.add_argument("--resume", metavar="DIR", help="go on with an interrupted bisect from its directory")
    fan = sp.add_argument_group("fanned out over CI machines, in rounds (tbctl ci-template --bisect writes the pipeline)")
    fan.add_argument("--plan", metavar="DIR", help="check the bisect and write its directory for a pipeline; nothing "
                                                   "is built")
    fan.add_argument("--shards", type=ranged(int, 1, MAX_SHARDS), default=1, metavar="N",
                     help="with --plan: machines per round (1)")
    fan.add_argument("--rounds", type=ranged(int, 1, 1000), metavar="R",
                     help="with --plan: the pipeline's rounds (default: what the search takes, and 4 more for "
                          "skipped or undecided commits)")
    fan.add_argument("--shard", dest="fan_shard", metavar="K/N",  # not `shard`: a run spec's field
                     help="with --resume: build this round's commit and run shard K's share of its runs")
    fan.add_argument("--merge", action="store_true", help="with --resume: add this round's shards up")
    cold_opt(sp)
    run_opts(sp)
    sp.set_defaults(fn=cmd_bisect)


def _settings(args: argparse.Namespace) -> bisect.Settings:
    """The bisect's settings from the options, every mistake one line before anything is built."""
    fixing = args.broken is not None or args.fixed is not None
    old, new = (args.broken, args.fixed) if fixing else (args.good, args.bad)
    if args.target is None or args.repo is None or old is None or new is None or \
            (fixing and (args.good or args.bad)):
        raise ConfigError("tbctl bisect TEST --repo DIR, and --good REF --bad REF (a regression) or "
                          "--broken REF --fixed REF (a fix)")
    if args.spdk_dir is not None:
        raise ConfigError("--spdk-dir: bisect builds its own tree of --repo at each commit")
    repo = Path(args.repo).resolve()
    if subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True,
                      timeout=60).returncode != 0:
        raise ConfigError(f"--repo {args.repo}: not a git repository")
    terms = bisect_rule.TERMS["fix" if fixing else "regression"]
    old_sha, new_sha = bisect.resolve(repo, old, f"--{terms[0]}"), bisect.resolve(repo, new, f"--{terms[1]}")
    bisect.line_of_commits(repo, old_sha, new_sha, terms)
    return bisect.Settings(repo, old_sha, new_sha, fixing, run_target(args.target), args.signature, args.runs,
                           args.max_runs,
                           args.build, args.build_timeout, args.jobs,
                           args.seed if args.seed is not None else random.randrange(1 << 31))


def cmd_bisect(args: argparse.Namespace) -> int:
    if (args.fan_shard or args.merge) and not args.resume:
        raise ConfigError("--shard and --merge go with --resume DIR: the directory --plan wrote")
    if args.fan_shard and args.merge:
        raise ConfigError("--shard K/N or --merge: a job does one")
    if args.plan:
        return plan(args)
    if args.resume:
        out = Path(args.resume).resolve()
        if not (out / "settings.json").is_file():
            raise ConfigError(f"--resume {args.resume}: no settings.json: not a bisect's directory")
        settings = bisect.Settings.load(out / "settings.json")
    else:
        settings = _settings(args)
        out = artifacts_root() / time.strftime("bisect-%Y%m%d-%H%M%S")
        out.mkdir(parents=True)
        settings.dump(out / "settings.json")
    if not (args.fan_shard or args.merge):
        return answer(bisect.Bisect(settings, out, *machine(args, settings, out)).execute(), out)
    run = bisect.Bisect(settings, out, out / "spec.json", None)  # the shards' spec; a merge builds nothing
    fan = bisect_fanout.FanOut(run, bisect_fanout.Plan.load(out))
    if args.merge:
        doc = fan.merge()
        if doc is None:
            print(f"bisect: round {fan.round - 1} merged; round {fan.round} runs {(fan.b.next_commit() or '')[:12]}")
            return 0
        return answer(doc, out)
    part = shard.parse(args.fan_shard, "--shard")
    fan.check(part)
    if fan.work() is None:
        print(f"bisect: nothing left to run in round {fan.round}: the search is over")
        return 0
    run.spec, run.image = machine(args, settings, out, runspec.load(out / ASKED))
    fan.run_share(part)
    return 0


def machine(args: argparse.Namespace, settings: bisect.Settings, out: Path,
            base: RunSpec | None = None) -> tuple[Path, Image]:
    """The runs' spec (on the bisect's own tree) and the image the commits are built in: the run
    options given, on top of `base` (a planned bisect's: what its plan was given)."""
    tree = out / "tree"
    tree.mkdir(exist_ok=True)
    given = argparse.Namespace(**{**vars(args), "spdk_dir": str(tree), "seed": None})
    spec = with_scripts(run_spec(given, base or RunSpec()), [settings.target], check=False)
    env = resolve(spec, args.mirror)
    # as repro's runs: from saved guests (each made by the first run that needs it), unless --cold
    spec = dataclasses.replace(spec, image=env.image.manifest["name"], accel=env.accel,
                               snapshot=spec.snapshot or not args.cold)
    return spec.dump(out / "spec.json"), env.image


def plan(args: argparse.Namespace) -> int:
    """A bisect's directory for a pipeline of rounds: its settings and its fan-out, checked now."""
    settings = _settings(args)
    commits = len(bisect.line_of_commits(settings.repo, settings.old, settings.new,
                                         bisect_rule.TERMS["fix" if settings.fixing else "regression"]))
    least = bisect_fanout.min_rounds(commits)
    rounds = args.rounds or least + SPARE_ROUNDS
    if rounds < least:
        raise ConfigError(f"--rounds {rounds}: a search over {commits} commits takes at least {least} "
                          "(the failing end, the clean end, then halving)")
    out = Path(args.plan)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--plan {args.plan}: not empty: a plan starts a bisect of its own")
    asked = run_spec(argparse.Namespace(**{**vars(args), "seed": None}), RunSpec())  # for every shard; checked now
    out.mkdir(parents=True, exist_ok=True)
    settings.dump(out / "settings.json")
    asked.dump(out / ASKED)
    bisect_fanout.Plan(args.shards, rounds).dump(out)
    print(f"bisect: planned in {out}: {commits} commits, {args.shards} shards, {rounds} rounds "
          f"(at least {least})")
    return 0


def answer(doc: dict[str, Any], out: Path) -> int:
    """The answer, as a person reads it."""
    first = doc["answer"]
    says = (f"the first {doc['first']} commit: {first[0]['commit'][:12]} {first[0]['subject']!r}" if len(first) == 1
            else f"the first {doc['first']} commit is one of {len(first)}: " +
            ", ".join(f"{c['commit'][:12]} {c['subject']!r}" for c in first) + " (the others did not build or "
            "stayed undecided)")
    print(f"{says}; doubt {doc['doubt']:.1%} (the chance a clean verdict hid the failure, at its rate "
          f"{doc['rate']:.0%})")
    if doc["inconsistent"]:
        print(f"verdicts that contradict the answer: {', '.join(c[:12] for c in doc['inconsistent'])} "
              "(the signature has another cause too, or its rate moved)")
    if len(first) == 1 and not doc["changes_what_is_built"]:
        print(f"the commit changes nothing that is built ({', '.join(doc['files']) or 'no file'}): likely a wrong "
              "answer")
    print(f"bisect: {out / 'bisect.json'}")
    return 0
