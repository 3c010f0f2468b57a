"""tbctl merge: results of several runs (a sharded run's shards) as one; and a run compared
with a baseline, for `run` and `merge` alike."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.cli.argtypes import output_file, ranged
from orchestrator.errors import ConfigError
from orchestrator.results import baseline, html, junit, merge
from orchestrator.results.lines import test_lines

SLOWER_HELP = "with --baseline: a passing test is slower when it took this fraction longer (default 0.5) and 1 s more"


def baseline_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--baseline", metavar="FILE", help="an earlier results.json: print what changed since; the exit "
                                                       "code then follows new failures only")
    sp.add_argument("--slower", type=ranged(float, 0, 100, above=True), default=0.5, metavar="FRACTION", help=SLOWER_HELP)


def check_baseline(args: argparse.Namespace) -> dict[str, Any] | None:
    """The baseline, read before any work (its mistakes are one line)."""
    return merge.load(args.baseline) if args.baseline else None


def against(base: dict[str, Any] | None, args: argparse.Namespace, now: dict[str, Any]) -> int:
    """Print the changes since the baseline and add them to `now` as its `baseline`; the exit code
    they give."""
    if base is None:
        return int(now["exit_code"])
    changes = baseline.compare(base, now, args.slower)
    for line in baseline.lines(args.baseline, base, now, changes):
        print(line)
    code = baseline.exit_code(now, changes)
    now["baseline"] = {"file": str(Path(args.baseline).resolve()), "changes": changes, "exit_code": code}
    return code


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("merge", help="several runs' results.json (shards) as one: summary, results.json, JUnit; "
                           "exit 2 when a shard is missing or incomplete")
    sp.add_argument("results", nargs="+", metavar="RESULTS.json")
    sp.add_argument("--json", type=output_file, metavar="FILE", help="write the merged results.json")
    sp.add_argument("--junit", type=output_file, metavar="FILE", help="write the merged JUnit XML")
    html_opt(sp)
    baseline_opts(sp)
    sp.set_defaults(fn=cmd_merge)

    sp = add("report", help="the HTML report of a results.json (a run's or a merge's)")
    sp.add_argument("results", metavar="RESULTS.json")
    sp.add_argument("-o", "--html", type=output_file, metavar="FILE", help="write here (default: beside it, RESULTS.html)")
    sp.set_defaults(fn=cmd_report)


def html_opt(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--html", type=output_file, metavar="FILE", help="write the HTML report (one self-contained file)")


def write_html(doc: dict[str, Any], path: str | Path) -> None:
    html.write(doc, Path(path))
    print(f"report:    {path}")


def cmd_report(args: argparse.Namespace) -> int:
    doc = merge.load(args.results)
    write_html(doc, args.html or Path(args.results).with_suffix(".html"))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    base = check_baseline(args)
    twice = sorted({p for p in args.results if args.results.count(p) > 1})
    if twice:
        raise ConfigError(f"{', '.join(twice)}: given more than once")
    docs = {p: merge.load(p) for p in args.results}
    merged = merge.merge(docs)
    for m in merged["merged"]:
        s = m["shard"]
        print(f"{'shard ' + str(s['index']) + '/' + str(s['total']) if s else 'run':11} exit {m['exit_code']}  "
              f"{m['file']}")
    for line in test_lines(merged["tests"]):
        print(line)
    for p in merged["problems"]:
        print(f"incomplete: {p}")
    code = against(base, args, merged)
    if args.json:
        write_json(merged, Path(args.json))
    if args.junit:
        junit.write(merged, Path(args.junit))
    if args.html:
        write_html(merged, args.html)
    print(f"merged: {len(merged['tests'])} tests from {len(docs)} files (exit code {code})")
    return code
