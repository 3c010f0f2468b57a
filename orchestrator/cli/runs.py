"""tbctl run, repro and list: suites, through the engine."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.cli import reports
from orchestrator.cli.argtypes import SECONDS, mirror_url, output_file, ranged
from orchestrator.cli.common import (
    KNOWN_FAILURES,
    MIRROR_HELP,
    SUITES,
    artifacts_root,
    image_opts,
    known_suites,
    prepare,
    suite_paths,
    topology_opts,
)
from orchestrator.config import bed as beds
from orchestrator.config import expunge, runspec, topology
from orchestrator.config.runspec import RunSpec
from orchestrator.errors import ConfigError
from orchestrator.faults import marker
from orchestrator.faults import table as fault_table
from orchestrator.machines import snapshot
from orchestrator.machines.environment import Environment
from orchestrator.results import repro, shard
from orchestrator.spdk import autorun
from orchestrator.spdk import script as spdk_script
from orchestrator.vm import qemu_binary

MAX_RETRIES = 10
SCRIPTS_SUITE = SUITES / "_spdk_scripts.py"  # one test per `spdk:PATH` target
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
    sp.add_argument("--spdk-env", action="append", metavar="NAME=VALUE",
                    help="a variable for the spdk:PATH scripts, as autorun-spdk.conf sets them (NET_TYPE=virt); "
                         "repeatable")
    sp.add_argument("--spdk-conf", metavar="FILE",
                    help="the autorun-spdk.conf (SPDK_TEST_* flags) spdk:autorun runs the tree's autorun.sh with")
    sp.add_argument("--fault", dest="faults", action="append", metavar="'KIND [ARGS] after MARKER [+S]'",
                    help="fire a fault (`tbctl list --faults`) on an spdk:PATH script's machine when a line of its "
                         "output contains MARKER, S seconds later: 'remove nvme0 after \"START TEST nvme_reset\" "
                         "+2s'; repeatable")


def selection_opts(sp: argparse.ArgumentParser) -> None:
    """Which tests: suites (or --all), then -k, then the shard."""
    sp.add_argument("suites", nargs="*", metavar="SUITE", help="suite name (see `tbctl list`), SUITE::TEST, a file, or spdk:PATH: "
                                                                   "a test script of the --spdk-dir tree, run unchanged")
    sp.add_argument("--all", action="store_true", help="every suite")
    sp.add_argument("-k", metavar="EXPR", help="select tests, as pytest -k")
    sp.add_argument("--shard", metavar="K/N", help="only shard K of N (a suite module stays in one shard); default: "
                                                   "$TBCTL_SHARD, GitLab's CI_NODE_INDEX/CI_NODE_TOTAL, or "
                                                   "Kubernetes' JOB_COMPLETION_INDEX with $TBCTL_SHARD_TOTAL")
    sp.add_argument("--shard-by", choices=shard.BY,
                    help="split by suite module (default: each module's VM boots once) or by test")
    sp.add_argument("--durations", metavar="FILE", help="an earlier results.json: balance the shards by its durations")


def selection(args: argparse.Namespace) -> list[str]:
    """The pytest arguments of the selection (suites, SPDK scripts, -k), checked before anything is
    built or booted."""
    if bool(args.suites) == args.all:
        raise ConfigError("name the suites to run, or --all for every suite (not both)")
    names = known_suites() if args.all else [n for n in args.suites if not n.startswith(spdk_script.PREFIX)]
    argv = suite_paths(names) + ([str(SCRIPTS_SUITE)] if len(names) < len(args.suites) else [])
    return argv + ["-k", args.k] if args.k is not None else argv


def cold_opt(sp: argparse.ArgumentParser) -> None:
    """Repeated runs (repro's, bisect's) start from saved guests unless told."""
    sp.add_argument("--cold", action="store_true", help="boot every run's machine instead of restoring a saved guest")


def with_scripts(spec: RunSpec, targets: list[str], check: bool = True) -> RunSpec:
    """The spec with the `spdk:PATH` targets among `targets`, each a script of its SPDK tree
    (`check`: there; `tbctl list` names them as given). Scripts alone, with no topology named,
    run on the one shaped like SPDK's CI VMs, whose devices they look for (devices.sh wants a
    3 GiB disk, others ZNS, metadata, CMB); beside suites, on the suites' default."""
    scripts = [spdk_script.parse_target(t, spec.spdk_dir) if check else t.removeprefix(spdk_script.PREFIX)
               for t in targets if t.startswith(spdk_script.PREFIX)]
    spec = dataclasses.replace(spec, scripts=tuple(dict.fromkeys(scripts))) if scripts else spec
    if scripts and len(scripts) == len(targets) and spec.topology is None:
        spec = dataclasses.replace(spec, topology=Path(topology.ref(spdk_script.TOPOLOGY)))
    if not check:
        return spec
    if spec.faults and not spec.scripts:
        raise ConfigError(f"{marker.OPTION}: a marker fault fires at a line an SPDK script prints: run an "
                          "spdk:PATH target with it")
    jobs = [s for s in spec.scripts if autorun.takes_conf(s)]
    if spec.spdk_conf is not None and not jobs:
        raise ConfigError(f"--spdk-conf {spec.spdk_conf}: the conf of the tree's autorun.sh or autotest.sh: run "
                          "spdk:autorun or spdk:autotest with it")
    if jobs:
        if spec.spdk_conf is None:
            job = next(k for k, v in autorun.SCRIPTS.items() if v == jobs[0])
            raise ConfigError(f"spdk:{job}: runs the tree's {jobs[0]} with your autorun-spdk.conf: --spdk-conf FILE")
        assert spec.spdk_dir is not None  # a script target needs its tree (parse_target said so)
        autorun.check_conf(spec.spdk_conf, spec.spdk_dir)
    return spec


def base_spec(args: argparse.Namespace) -> RunSpec:
    """What a run's options change: --spec's file, else the defaults with the project's known failures."""
    return runspec.load(args.spec) if args.spec else RunSpec(known_failures=KNOWN_FAILURES)


def run_spec(args: argparse.Namespace, base: RunSpec) -> RunSpec:
    """The run's settings: `base` (a --spec file's, or the defaults) with the options given on top,
    every file it names read and checked before anything is built or booted."""
    opts = vars(args)  # an option named as the spec's field is that field
    spec = base.given(**{f.name: opts.get(f.name) for f in dataclasses.fields(RunSpec)})
    if opts.get("expunge") is not None:  # `none`: no list, whatever the base had
        spec = dataclasses.replace(spec, known_failures=Path(args.expunge) if args.expunge != "none" else None)
    if opts.get("spdk_env") is not None:
        spec = dataclasses.replace(spec, spdk_env=spdk_script.parse_env(opts["spdk_env"]))
    if opts.get("faults") is not None:
        spec = dataclasses.replace(spec, faults=tuple(opts["faults"]))
    for f in spec.faults:
        marker.parse(f)
    if spec.known_failures:
        expunge.load(spec.known_failures)
    if spec.bed:
        beds.load(spec.bed)
    if spec.shard:
        shard.parse(spec.shard, "--shard")
    else:
        shard.from_env(os.environ)
    if spec.durations:
        shard.load_durations(spec.durations)
    return spec


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("run", help="run suites (pytest underneath); exit 0 passed, 1 failed, 2 infrastructure")
    selection_opts(sp)
    run_opts(sp)
    sp.add_argument("--junit", type=output_file, metavar="FILE", help="write JUnit XML")
    sp.add_argument("--json", type=output_file, metavar="FILE", help="write results.json here (default: in the run's artifacts)")
    reports.html_opt(sp)
    sp.add_argument("--keep-vm", action="store_true", default=None,
                    help="keep a failing test's VMs running for you (tbctl ssh NAME; tbctl down NAME)")
    sp.add_argument("--seed", type=SEED, help="replay the fault timing and random choices of an earlier run")
    sp.add_argument("--retries", type=ranged(int, 0, MAX_RETRIES), default=0, metavar="N",
                    help=f"run a failing test again, up to N times (0..{MAX_RETRIES}, fresh machines): one that "
                         "then passes is reported flaky")
    sp.add_argument("--snapshot", action="store_true", default=None,
                    help="start machines from a saved ready guest (made once, cached), not by booting")
    sp.add_argument("--expunge", metavar="FILE|none",
                    help="known failures (TOML): reported as `known failure`, they do not fail the run "
                         f"(default: the project's own, {KNOWN_FAILURES.relative_to(SUITES.parent)}; none: every failure fails it)")
    sp.add_argument("--spec", metavar="FILE", help="an earlier run's settings (its spec.json, a repro bundle's); "
                                                   "the options given here change them")
    reports.baseline_opts(sp)
    sp.set_defaults(fn=cmd_run)

    sp = add("repro", help="run a test many times (parallel VMs): failure rate, signatures, bundle")
    sp.add_argument("target", metavar="SUITE[::TEST]", help="suite name, SUITE::TEST, a file, or spdk:PATH "
                                                                          "(a script of the --spdk-dir tree)")
    sp.add_argument("-n", "--runs", type=ranged(int, 1, 100_000), required=True, help="how many runs")
    sp.add_argument("--until-fail", action="store_true", help="stop starting runs after the first failure")
    sp.add_argument("--jobs", "-j", type=ranged(int, 1, 256), help="runs at once (default: from host cores and memory)")
    sp.add_argument("--seed", type=SEED, help="the repro's seed: the same seed replays the same run schedules")
    cold_opt(sp)
    run_opts(sp)
    sp.set_defaults(fn=cmd_repro)

    sp = add("list", help="list suites and their tests (all, or those named; of one shard with --shard), "
                          "or the faults tbctl can fire (--faults)")
    selection_opts(sp)
    sp.add_argument("--faults", dest="list_faults", action="store_true",
                    help="every fault kind: its arguments and what it does")
    sp.set_defaults(fn=cmd_list)


def pinned(spec: RunSpec, env: Environment) -> RunSpec:
    """The spec with what was resolved for it (the image built, the accelerator probed) written in:
    the engine, and every run of a repro, start from the same choice."""
    return dataclasses.replace(spec, image=env.image.manifest["name"], accel=env.accel)


def cmd_run(args: argparse.Namespace) -> int:
    """Thin front over the engine: the run's spec checked, the image built, the accelerator picked,
    then the spec handed over in one file (kept with the artifacts)."""
    paths = selection(args)
    spec = with_scripts(run_spec(args, base_spec(args)), args.suites)
    base = reports.check_baseline(args)
    run_dir = artifacts_root() / time.strftime("run-%Y%m%d-%H%M%S")
    env = prepare(spec, args.mirror)
    results = Path(args.json).resolve() if args.json else run_dir / "results.json"
    spec = dataclasses.replace(pinned(spec, env), artifacts=run_dir, results=results)
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [*paths, "-o", "junit_family=xunit1", "--tb-spec", str(spec.dump(run_dir / "spec.json")), "-rN"]
    if args.junit:
        argv += ["--junitxml", args.junit]
    if args.retries:
        argv += ["--reruns", str(args.retries)]  # pytest-rerunfailures; orchestrator.engine.attempts
    from orchestrator.engine import run  # pytest: loaded by the commands that run it, not by every tbctl command

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


def run_target(target: str) -> str:
    """A test target checked, as a `tbctl run` started anywhere takes it (a suite file by its
    absolute path): what repro and bisect hand to each of their runs."""
    if target.startswith(spdk_script.PREFIX):
        return target
    suite_paths([target])
    base, sep, rest = target.partition("::")
    return target if (SUITES / f"{base}.py").is_file() else str(Path(base).resolve()) + sep + rest


def cmd_repro(args: argparse.Namespace) -> int:
    """Validate and build once, then hand each run to its own `tbctl run`, on one spec."""
    target = run_target(args.target)
    # Every failure counts in a rate, known or not: the runs report them as they are.
    spec = with_scripts(run_spec(argparse.Namespace(**{**vars(args), "seed": None}), RunSpec()), [args.target])
    out = artifacts_root() / time.strftime("repro-%Y%m%d-%H%M%S")
    env = prepare(spec, args.mirror)
    spec = dataclasses.replace(pinned(spec, env), qemu=str(qemu_binary.current().path) if spec.qemu else None)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    jobs = args.jobs or repro.default_jobs(env.topology.memory_mib)
    out.mkdir(parents=True, exist_ok=True)
    if not args.cold:  # each save made here once, before the runs, so they all start from it at once
        from orchestrator.engine import run as engine_run  # pytest is loaded only here

        whole = dataclasses.replace(spec, shard="1/1")  # a repro started by one shard of a pipeline runs it all
        shapes = [env.topology] if spec.scripts else engine_run.topologies_of([target], whole.dump(out / "spec.json"))
        for topo in shapes:
            reason = snapshot.unsupported(topo, env.accel)
            if reason:
                print(f"repro: machines of {topo.name} boot cold in every run: {reason}", file=sys.stderr)
                continue
            saved = snapshot.ensure(topo, env.image, env.accel, env.shares,
                                    log=lambda msg: print(f"repro: {msg}", file=sys.stderr))
            print(f"repro: machines of {topo.name} start from the saved guest {saved.dir}", file=sys.stderr)
            spec = dataclasses.replace(spec, snapshot=True)
    print(f"repro: {args.target}, {args.runs} runs, {jobs} at once, seed {seed}, artifacts {out}", file=sys.stderr)
    r = repro.Repro(target, args.runs, jobs, seed, out, spec.dump(out / "spec.json"), args.until_fail)
    runs = r.execute()
    repro.summary(runs, args.runs, seed, print)
    failed = [x for x in runs if x.failed]
    if failed:
        bundle = r.bundle(min(failed, key=lambda x: x.index))
        print(f"repro bundle: {bundle} (replay: {bundle / 'replay.sh'})")
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.list_faults:  # not `faults`: an option named as a spec field is that field
        print(fault_table.listing())
        return 0
    if not args.suites:
        args.all = True
    paths, spec = selection(args), with_scripts(run_spec(args, RunSpec()), args.suites, check=False)
    with tempfile.TemporaryDirectory(prefix="tbctl-list-") as tmp:  # the shard's, if one is asked for
        from orchestrator.engine import run

        return run.list_tests([*paths, "--tb-spec", str(spec.dump(Path(tmp) / "spec.json"))])
