"""tbctl run, repro and list: suites, through the engine."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

from orchestrator.cli import reports
from orchestrator.cli.common import (
    MIRROR_HELP,
    SECONDS,
    KNOWN_FAILURES,
    SUITES,
    artifacts_root,
    image_opts,
    known_suites,
    mirror_url,
    output_file,
    prepare,
    ranged,
    suite_paths,
    topology_opts,
)
from orchestrator.config import bed as beds
from orchestrator.config import expunge
from orchestrator.engine import repro, run, shard
from orchestrator.errors import ConfigError
from orchestrator.machines import snapshot
from orchestrator.vm import qemu_binary

MAX_RETRIES = 10
SEED = ranged(int, 0, 2**63 - 1)


def run_opts(sp: argparse.ArgumentParser) -> None:
    topology_opts(sp)
    sp.add_argument("--bed", metavar="FILE", help="bed of several machines (TOML) for the suites that use one "
                                                  "(default: each suite's own)")
    sp.add_argument("--timeout", type=SECONDS, metavar="S", help="per-test deadline, overriding the suites' own")
    image_opts(sp)
    sp.add_argument("--jitter", type=ranged(float, 0, 60), metavar="S",
                    help="hotplug faults fire after a seeded delay below S seconds (default 0.3; 0: at once)")
    sp.add_argument("--mirror", type=mirror_url, help=MIRROR_HELP)


def selection_opts(sp: argparse.ArgumentParser) -> None:
    """Which tests: suites (or --all), then -k, then the shard."""
    sp.add_argument("suites", nargs="*", metavar="SUITE", help="suite name (see `tbctl list`), SUITE::TEST, or a file")
    sp.add_argument("--all", action="store_true", help="every suite")
    sp.add_argument("-k", metavar="EXPR", help="select tests, as pytest -k")
    sp.add_argument("--shard", metavar="K/N", help="only shard K of N (a suite module stays in one shard); default: "
                                                   "$TBCTL_SHARD, GitLab's CI_NODE_INDEX/CI_NODE_TOTAL, or "
                                                   "Kubernetes' JOB_COMPLETION_INDEX with $TBCTL_SHARD_TOTAL")
    sp.add_argument("--shard-by", choices=shard.BY, default="module",
                    help="split by suite module (default: each module's VM boots once) or by test")
    sp.add_argument("--durations", metavar="FILE", help="an earlier results.json: balance the shards by its durations")


def selection(args: argparse.Namespace) -> list[str]:
    """The pytest arguments of the selection, checked before anything is built or booted."""
    if bool(args.suites) == args.all:
        raise ConfigError("name the suites to run, or --all for every suite (not both)")
    argv = suite_paths(known_suites() if args.all else args.suites)
    if args.shard:
        shard.parse(args.shard, "--shard")
    else:
        shard.from_env(os.environ)
    if args.durations:
        shard.load_durations(args.durations)
    for flag, value in (("-k", args.k), ("--tb-shard", args.shard), ("--tb-durations", args.durations)):
        if value is not None:
            argv += [flag, value]
    return argv + ["--tb-shard-by", args.shard_by]


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("run", help="run suites (pytest underneath); exit 0 passed, 1 failed, 2 infrastructure")
    selection_opts(sp)
    run_opts(sp)
    sp.add_argument("--junit", type=output_file, metavar="FILE", help="write JUnit XML")
    sp.add_argument("--json", type=output_file, metavar="FILE", help="write results.json here (default: in the run's artifacts)")
    reports.html_opt(sp)
    sp.add_argument("--keep-vm", action="store_true",
                    help="keep a failing test's VMs running for you (tbctl ssh NAME; tbctl down NAME)")
    sp.add_argument("--seed", type=SEED, help="replay the fault timing and random choices of an earlier run")
    sp.add_argument("--retries", type=ranged(int, 0, MAX_RETRIES), default=0, metavar="N",
                    help=f"run a failing test again, up to N times (0..{MAX_RETRIES}, fresh machines): one that "
                         "then passes is reported flaky")
    sp.add_argument("--snapshot", action="store_true",
                    help="start machines from a saved ready guest (made once, cached), not by booting")
    sp.add_argument("--expunge", metavar="FILE|none", type=_known_failures, default=str(KNOWN_FAILURES),
                    help="known failures (TOML): reported as `known failure`, they do not fail the run "
                         f"(default: the project's own, {KNOWN_FAILURES.relative_to(SUITES.parent)}; none: every failure fails it)")
    reports.baseline_opts(sp)
    sp.set_defaults(fn=cmd_run)

    sp = add("repro", help="run a test many times (parallel VMs): failure rate, signatures, bundle")
    sp.add_argument("target", metavar="SUITE[::TEST]", help="suite name, SUITE::TEST, or a file")
    sp.add_argument("-n", "--runs", type=ranged(int, 1, 100_000), required=True, help="how many runs")
    sp.add_argument("--until-fail", action="store_true", help="stop starting runs after the first failure")
    sp.add_argument("--jobs", "-j", type=ranged(int, 1, 256), help="runs at once (default: from host cores and memory)")
    sp.add_argument("--seed", type=SEED, help="the repro's seed: the same seed replays the same run schedules")
    sp.add_argument("--cold", action="store_true", help="boot every run's machine instead of restoring a saved guest")
    run_opts(sp)
    sp.set_defaults(fn=cmd_repro)

    sp = add("list", help="list suites and their tests (all, or those named; of one shard with --shard)")
    selection_opts(sp)
    sp.set_defaults(fn=cmd_list)


def _known_failures(text: str) -> str | None:
    """--expunge's value: `none` is no list at all, so every failure fails the run."""
    return None if text == "none" else text


def cmd_run(args: argparse.Namespace) -> int:
    """Thin front over the engine: validate, build the image, pick the accelerator, then hand over."""
    paths = selection(args)
    if args.expunge:
        expunge.load(args.expunge)  # its mistakes before anything is built or booted
    if args.bed:
        beds.load(args.bed)
    base = reports.check_baseline(args)
    run_dir = artifacts_root() / time.strftime("run-%Y%m%d-%H%M%S")
    _, img, acc = prepare(args)
    results = Path(args.json) if args.json else run_dir / "results.json"
    argv = [*paths, "-o", "junit_family=xunit1", "--tb-artifacts", str(run_dir), "--tb-accel", acc,
            "--tb-image", img.manifest["name"], "--tb-results", str(results), "-rN"]
    for flag, value in (("--tb-topology", args.topology), ("--tb-bed", args.bed), ("--tb-timeout", args.timeout),
                        ("--tb-spdk-dir", args.spdk_dir), ("--tb-seed", args.seed), ("--junitxml", args.junit),
                        ("--tb-jitter", args.jitter), ("--tb-qemu", args.qemu), ("--tb-expunge", args.expunge)):
        if value is not None:
            argv += [flag, str(value)]
    if args.retries:
        argv += ["--reruns", str(args.retries)]  # pytest-rerunfailures; orchestrator.engine.attempts
    if args.keep_vm:
        argv.append("--tb-keep-vm")
    if args.snapshot:
        argv.append("--tb-snapshot")
    run.run(argv + args.pytest_args)
    try:
        doc = json.loads(results.read_text())
        int(doc["exit_code"])
    except (OSError, ValueError, KeyError):
        print(f"tbctl: the run wrote no results ({results}): incomplete", file=sys.stderr)
        return 2
    code = reports.against(base, args, doc)
    if base is not None:
        reports.write_json(doc, results)  # with the comparison
    if args.html:
        reports.write_html(doc, args.html)
    return code


def cmd_repro(args: argparse.Namespace) -> int:
    """Validate and build once, then hand each run to its own `tbctl run`."""
    suite_paths([args.target])
    if args.bed:
        beds.load(args.bed)
    out = artifacts_root() / time.strftime("repro-%Y%m%d-%H%M%S")
    topo, img, acc = prepare(args)
    # Every failure counts in a rate, known or not: the runs report them as they are.
    run_args = ["--accel", acc, "--image", img.manifest["name"], "--expunge", "none"]
    for flag, value in (("--topology", args.topology), ("--bed", args.bed), ("--timeout", args.timeout),
                        ("--spdk-dir", args.spdk_dir), ("--jitter", args.jitter)):
        if value is not None:
            path_like = flag in ("--topology", "--bed", "--spdk-dir")
            run_args += [flag, str(Path(value).resolve()) if path_like else str(value)]
    if args.qemu:
        run_args += ["--qemu", str(qemu_binary.current().path)]
    base, sep, rest = args.target.partition("::")
    target = args.target if (SUITES / f"{base}.py").is_file() else str(Path(base).resolve()) + sep + rest
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    jobs = args.jobs or repro.default_jobs(topo.memory_mib)
    if not args.cold:
        reason = snapshot.unsupported(topo)
        if reason:
            print(f"repro: cold boot for every run: {reason}", file=sys.stderr)
        else:  # made here once, before the runs, so they all start from it at once
            shares = {"spdk": Path(args.spdk_dir).resolve()} if args.spdk_dir else {}
            saved = snapshot.ensure(topo, img, acc, shares, log=lambda msg: print(f"repro: {msg}", file=sys.stderr))
            print(f"repro: every run starts from the saved guest {saved.dir}", file=sys.stderr)
            run_args.append("--snapshot")
    print(f"repro: {args.target}, {args.runs} runs, {jobs} at once, seed {seed}, artifacts {out}", file=sys.stderr)
    r = repro.Repro(target, args.runs, jobs, seed, out, run_args, args.until_fail)
    runs = r.execute()
    repro.summary(runs, args.runs, seed, print)
    failed = [x for x in runs if x.failed]
    if failed:
        bundle = r.bundle(min(failed, key=lambda x: x.index))
        print(f"repro bundle: {bundle} (replay: {bundle / 'replay.sh'})")
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    if not args.suites:
        args.all = True
    return run.list_tests(selection(args))
