"""tbctl ci-template: a nightly job for the scheduler people already run, rendered from
templates/ci/: N jobs each running one shard of `tbctl run`, then `tbctl merge` of their results;
or, with --bisect, a bisect's pipeline: its plan, then rounds of N shards and a merge
(orchestrator/results/bisect_fanout.py). Every file runs the same commands
(templates/ci/commands.j2), through scripts/dev so a fresh runner installs what it needs."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.cli.argtypes import output_file, ranged
from orchestrator.cli.common import suite_paths
from orchestrator.errors import ConfigError
from orchestrator.render import render

KINDS = {"gitlab": "gitlab-ci.yml.j2", "github": "github-workflow.yml.j2", "jenkins": "Jenkinsfile.j2",
         "k8s": "k8s-job.yaml.j2"}
BISECT_KINDS = {"gitlab": "gitlab-bisect.yml.j2", "github": "github-bisect.yml.j2", "jenkins": "Jenkinsfile-bisect.j2"}
# tbctl bisect's options the pipeline sets itself, job by job
BISECT_OWN = ("--plan", "--shards", "--rounds", "--shard", "--merge", "--resume")
MAX_SHARDS = 256  # GitLab's `parallel:` allows 200, GitHub's matrix 256
_K8S_NAME = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("ci-template", help="a nightly CI job of N shards and their merge: GitLab, GitHub, Jenkins, Kubernetes")
    sp.add_argument("kind", choices=KINDS, help="the scheduler")
    sp.add_argument("--shards", type=ranged(int, 1, MAX_SHARDS), required=True, metavar="N", help=f"how many jobs (1..{MAX_SHARDS})")
    sp.add_argument("--suite", dest="suites", action="append", default=[], metavar="SUITE",
                    help="a suite to run, again for more (default: every suite)")
    sp.add_argument("--expunge", metavar="FILE|none",
                    help="known failures (TOML, path in the checkout) for every shard instead of the project's own; "
                         "none: every failure fails the night")
    sp.add_argument("--results", default="results", metavar="DIR",
                    help="where the jobs write results and artifacts, relative to the checkout (default: results)")
    sp.add_argument("--timeout", type=ranged(int, 1, 7 * 24 * 60), default=180, metavar="MIN", help="a shard's time limit (default: 180)")
    sp.add_argument("--image", default="debian:bookworm", help="k8s: the pods' container image (Debian)")
    sp.add_argument("--claim", default="tbctl-work",
                    help="k8s: the PersistentVolumeClaim with the checkout in tbctl/ (default: tbctl-work)")
    sp.add_argument("--kvm", action="store_true", help="k8s: ask for /dev/kvm (KubeVirt's device plugin)")
    sp.add_argument("--bisect", metavar="ARGS",
                    help="a bisect's pipeline instead: tbctl bisect's arguments, quoted as one (the test, --repo as a "
                         "path on every runner, the ends, --runs ...)")
    sp.add_argument("--rounds", type=ranged(int, 1, 1000), default=16, metavar="R",
                    help="--bisect: rounds of shards and a merge (16: a search over up to 1025 commits, and 4 to "
                         "spare for skipped or undecided ones)")
    sp.add_argument("-o", "--output", type=output_file, metavar="FILE", help="write here (default: standard output)")
    sp.set_defaults(fn=cmd_ci_template)


def cmd_ci_template(args: argparse.Namespace) -> int:
    if args.bisect is not None:
        return write(args, bisect_pipeline(args))
    suite_paths(args.suites)  # unknown suites are one line now, not a red night later
    select = shlex.join(args.suites) if args.suites else "--all"
    if args.expunge:
        if args.expunge != "none" and not Path(args.expunge).is_file():
            raise ConfigError(f"--expunge {args.expunge}: no such file")
        select += " --expunge " + shlex.quote(args.expunge)
    if args.kind == "k8s":
        if not re.fullmatch(_K8S_NAME, args.claim) or len(args.claim) > 253:
            raise ConfigError(f"--claim {args.claim!r}: a Kubernetes name: lower-case letters, digits and '-'")
    return write(args, render(f"ci/{KINDS[args.kind]}", shards=args.shards, select=select,
                              results=shlex.quote(args.results), timeout_minutes=args.timeout, image=args.image,
                              claim=args.claim, kvm=args.kvm))


def bisect_pipeline(args: argparse.Namespace) -> str:
    """The bisect's pipeline; its arguments are checked by its plan job, the first to run."""
    if args.kind not in BISECT_KINDS:
        raise ConfigError(f"--bisect: {args.kind} has no pipeline of rounds: {', '.join(BISECT_KINDS)} do")
    given = shlex.split(args.bisect)
    own = [a for a in given if a.split("=")[0] in BISECT_OWN]
    if own:
        raise ConfigError(f"--bisect: {own[0]}: the pipeline sets it, job by job")
    if not given or given[0].startswith("-"):
        raise ConfigError("--bisect: the test comes first: 'SUITE::TEST --repo DIR --good REF --bad REF ...'")
    if not given[0].startswith("spdk:"):
        suite_paths([given[0].partition("::")[0]])  # an unknown suite: one line now, not at the plan job
    return render(f"ci/{BISECT_KINDS[args.kind]}", shards=args.shards, rounds=args.rounds, bisect=shlex.join(given),
                  state=shlex.quote(f"{args.results}/bisect"), timeout_minutes=args.timeout)


def write(args: argparse.Namespace, text: str) -> int:
    if args.output:
        Path(args.output).write_text(text)
        print(f"{args.output}: {args.kind}, {args.shards} shards", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
