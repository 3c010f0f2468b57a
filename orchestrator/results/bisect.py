"""`tbctl bisect`: the first commit of an SPDK history where a flaky failure starts (or stops),
judged by orchestrator.results.bisect_rule on runs of `tbctl repro`.

The user's repository is only read: the commits are checked out in a clone of tbctl's own
(`git clone --shared`, in the bisect's directory), its submodules taken from the user's
repository's own copies (no network), cleaned at each step; each commit is built in the guest
image's userland (`tbctl image shell`: what it builds runs in the guest) and its runs are
`tbctl run`s of the test on that tree. A line per step is printed and appended to steps.jsonl,
so an interrupted bisect resumes from it (`--resume DIR`); bisect.json has the answer,
bisect.html shows the steps, and the failing run at the answer's edge (the culprit's, or the last
broken commit's before a fix) is bundled for `tbctl repro`'s replay.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from orchestrator.errors import ConfigError, DeadlineError
from orchestrator.image import Image, shell
from orchestrator.render import render
from orchestrator.results import repro
from orchestrator.results.bisect_rule import CLEAN, FAILS, SKIPPED, TERMS, Search, Step, clean_runs, doubt

GIT_TIMEOUT = 600.0  # seconds for one git command (a clone of SPDK with its history: minutes)
# Each build runs the user's command between ccache's counters zeroed and read, when the image has
# ccache: the compilers' names (SPDK's and DPDK's builds call `cc`, which Debian's /usr/lib/ccache
# leaves out) first on PATH as links to it, its cache kept in the bisect's directory. An image
# without ccache leaves the links dangling, and the shell goes on to the real compilers.
BUILD = ('command -v ccache >/dev/null && ccache -z >/dev/null; sh -c "$1"; rc=$?; '
         'command -v ccache >/dev/null && ccache --print-stats > "$2"; exit $rc')
SPEC = "spec.json"  # the runs' settings, beside a shard's runs (bisect_fanout)
COMPILERS = ("cc", "c++", "gcc", "g++")
# The submodules are cloned from the user's own copies, paths on this machine: git ≥ 2.38 refuses
# that by default (CVE-2022-39253: a repository from elsewhere naming a local one).
LOCAL = ("-c", "protocol.file.allow=always")
CCACHE = "/usr/bin/ccache"
# Files a commit can change without changing what is built and run (the answer says so: such a
# culprit is likely a wrong answer, or a flake that moved).
UNBUILT = ("*.md", "doc/*", "CHANGELOG*", ".github/*", "LICENSE*")


def git(repo: Path, *args: str, check: bool = True) -> str:
    """git's output in `repo`; a failure is one ConfigError line with git's own words."""
    try:
        p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DeadlineError(f"git {' '.join(args)} in {repo}: not done within {GIT_TIMEOUT:g} s") from None
    if check and p.returncode != 0:
        said = (p.stderr or p.stdout).strip().splitlines()
        raise ConfigError(f"--repo {repo}: git {' '.join(args)}: {said[-1] if said else f'exit status {p.returncode}'}")
    return p.stdout.strip()


def resolve(repo: Path, ref: str, option: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                         capture_output=True, text=True, timeout=GIT_TIMEOUT)
    if out.returncode != 0:
        raise ConfigError(f"{option} {ref}: not a commit of {repo}")
    return out.stdout.strip()


def line_of_commits(repo: Path, old: str, new: str, terms: tuple[str, str]) -> list[str]:
    """`old`, then the first-parent line of commits up to `new` (SPDK's history is a line: its
    changes are rebased before they merge); refused in one line when old is not before new."""
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", old, new],
                      timeout=GIT_TIMEOUT).returncode != 0 or old == new:
        raise ConfigError(f"--{terms[0]} {old[:12]} is not an ancestor of --{terms[1]} {new[:12]}: "
                          "the search goes from the older commit to the newer one")
    return [old, *git(repo, "rev-list", "--first-parent", "--reverse", f"{old}..{new}").split()]


@dataclass(frozen=True)
class Settings:
    repo: Path
    old: str
    new: str
    fixing: bool
    target: str
    signature: str | None  # a glob over repro's signatures; None: the failing end's most common
    runs: int  # runs at the failing end, and the fewest for a clean verdict
    max_runs: int | None  # a commit undecided after these is skipped; None: twice what a clean verdict needs
    build: str  # run with sh -c in the tree, in the image's userland
    build_timeout: float
    jobs: int
    seed: int

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "repo": str(self.repo)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Settings:
        d = json.loads(path.read_text())
        return cls(**{**d, "repo": Path(d["repo"])})


@dataclass
class Judged:
    commit: str
    verdict: str
    runs: int = 0
    failures: int = 0
    others: int = 0
    build_seconds: float = 0.0
    seconds: float = 0.0
    why: str = ""  # a skip's reason
    cached: str = ""  # the compiler cache's part in the build: "912 of 1024 compiles from the cache"
    unpinned: str = ""  # submodules built from the user's own checkout, their pins not being in it


@dataclass(frozen=True)
class Built:
    """A commit's build: whether it built, in how long, why not, what the compiler cache saved,
    and the submodules it had at other commits than their pins."""

    ok: bool
    seconds: float
    why: str = ""
    cached: str = ""
    unpinned: str = ""


class Bisect:
    """One bisect in `out`: settings.json, the clone (tree/), each step's build log and runs
    (steps/COMMIT/), steps.jsonl, bisect.json."""

    def __init__(self, settings: Settings, out: Path, spec: Path, image: Image | None, progress: TextIO = sys.stderr,
                 runner: Callable[[Settings, Path, int, int, Path], list[str]] | None = None):
        self.s, self.out, self.spec, self.image, self.progress = settings, out, spec, image, progress
        self.tree, self.log = out / "tree", out / "steps.jsonl"
        self.runner = runner or run_batch
        self.terms = TERMS["fix" if settings.fixing else "regression"]
        self.commits = line_of_commits(settings.repo, settings.old, settings.new, self.terms)
        self.search = Search(self.commits, fixing=settings.fixing)
        self.done: dict[str, Judged] = {}
        self.rate = 0.0
        self.signature = settings.signature

    # -- the steps ------------------------------------------------------------------------------

    def checkout(self, commit: str) -> str:
        """The commit in tbctl's clone, clean, with its submodules at its pins from the user's
        copies. A pin the user's copy does not have (a commit since dropped upstream, a machine
        without the network) is taken from what the user's own checkout has there, as their own
        build would: said in the step's line, not a step skipped for good at every commit."""
        if not (self.tree / ".git").exists():
            git(self.out, "clone", "--quiet", "--shared", "--no-checkout", str(self.s.repo), str(self.tree))
        git(self.tree, "checkout", "--quiet", "--force", "--detach", commit)
        git(self.tree, "clean", "-ffdxq")
        modules = git(self.tree, "config", "-f", ".gitmodules", "--get-regexp", r"submodule\..*\.path", check=False)
        unpinned = []
        for line in modules.splitlines():  # the submodules the user has: the others stay empty, as in their checkout
            key, _, path = line.partition(" ")
            name = key.removeprefix("submodule.").removesuffix(".path")
            mine = self.s.repo / ".git" / "modules" / name
            if not mine.is_dir():
                continue
            git(self.tree, "config", f"submodule.{name}.url", str(mine))
            pin = git(self.tree, "rev-parse", f"HEAD:{path}")
            if subprocess.run(["git", "-C", str(mine), "cat-file", "-e", f"{pin}^{{commit}}"], capture_output=True,
                              timeout=GIT_TIMEOUT).returncode == 0:
                git(self.tree, *LOCAL, "submodule", "update", "--init", "--recursive", "--force", "--quiet", "--", path)
            else:
                theirs = git(mine, "rev-parse", "HEAD")
                git(self.tree, *LOCAL, "submodule", "update", "--init", "--force", "--quiet", "--no-fetch", "--", path,
                    check=False)  # clones the user's copy; its checkout of the pin fails
                git(self.tree / path, "checkout", "--quiet", "--force", "--detach", theirs)
                unpinned.append(f"{path} at {theirs[:12]}, yours (its pin {pin[:12]} is not in your copy)")
            git(self.tree / path, "clean", "-ffdxq")  # the last step's build products too (DPDK builds in its tree)
        return "; ".join(unpinned)

    def build(self, commit: str, where: Path) -> Built:
        """The commit checked out and built in the image's userland, its log in `where`."""
        if self.image is None:
            raise ConfigError("this bisect was given no image to build in")
        t0 = time.monotonic()
        try:
            unpinned = self.checkout(commit)
        except (ConfigError, DeadlineError) as e:
            return Built(False, time.monotonic() - t0, f"checkout: {e}")
        log, stats = where / "build.log", where / "ccache.stats"
        env = {"PATH": f"{compiler_links(self.out / 'ccache-bin')}:{shell.PATH}",
               "CCACHE_DIR": str(self.out / "ccache"), "CCACHE_MAXSIZE": "20G"}
        try:
            rc = shell.run(self.image, [self.out], ["sh", "-c", BUILD, "build", self.s.build, str(stats)],
                           self.s.build_timeout, cwd=self.tree, output=log, env=env)
        except DeadlineError as e:
            return Built(False, time.monotonic() - t0, str(e), unpinned=unpinned)
        return Built(rc == 0, time.monotonic() - t0, "" if rc == 0 else f"the build exited {rc} (its log: {log})",
                     cache_use(stats), unpinned)

    def step_dir(self, commit: str) -> Path:
        where = self.out / "steps" / commit[:12]
        where.mkdir(parents=True, exist_ok=True)
        return where

    def judge(self, commit: str) -> Judged:
        where = self.step_dir(commit)
        t0 = time.monotonic()
        built = self.build(commit, where)
        if not built.ok:
            return Judged(commit, SKIPPED, build_seconds=round(built.seconds, 1), why=built.why, cached=built.cached,
                          unpinned=built.unpinned)
        step = self.step()
        batch = 0
        while step.wanted():
            batch += 1
            n = min(step.wanted(), self.s.jobs)
            for sig in self.runner(self.s, self.spec, n, self.s.seed + batch, where / f"runs-{batch}"):
                step.add(sig)
        return self.judged(commit, step, built, time.monotonic() - t0)

    def step(self) -> Step:
        """A commit's verdict as its runs come in, by the rule at the failing end's rate."""
        return Step(self.needed, self.s.max_runs or 2 * self.needed, self.matches)

    @staticmethod
    def judged(commit: str, step: Step, built: Built, seconds: float) -> Judged:
        assert step.verdict is not None
        return Judged(commit, step.verdict, step.runs, step.failures, step.others, round(built.seconds, 1),
                      round(seconds, 1), "" if step.verdict != SKIPPED else
                      f"no verdict in {step.runs} runs ({step.others} failed otherwise)", built.cached, built.unpinned)

    def matches(self, signature: str) -> bool:
        """The signature searched for: the glob given, or the failing end's own, as it is."""
        if self.s.signature is not None:
            return fnmatch.fnmatchcase(signature, self.s.signature)
        return signature == self.signature

    # -- the whole search -----------------------------------------------------------------------

    @property
    def failing_end(self) -> str:
        return self.s.old if self.s.fixing else self.s.new

    @property
    def clean_end(self) -> str:
        return self.s.new if self.s.fixing else self.s.old

    @property
    def needed(self) -> int:
        """Clean runs a clean verdict needs, at the failing end's rate."""
        return clean_runs(self.rate, self.s.runs)

    def measure(self) -> None:
        """The failing end, `runs` times."""
        where = self.step_dir(self.failing_end)
        built = self.build(self.failing_end, where)
        if not built.ok:
            raise ConfigError(f"the failing end {self.failing_end[:12]} does not build: {built.why}")
        self.measured(self.runner(self.s, self.spec, self.s.runs, self.s.seed, where / "runs-0"), built)

    def measured(self, runs: list[str], built: Built) -> None:
        """The failing end's runs (each one's signature, "" for a pass): the rate the rest is
        judged against, and the signature (the most common there, unless given), into the log."""
        sigs = [s for s in runs if s]
        if self.signature is None and sigs:
            self.signature = collections.Counter(sigs).most_common(1)[0][0]
        failures = sum(self.matches(s) for s in sigs)
        if not failures:
            raise ConfigError(f"the failing end {self.failing_end[:12]} did not fail with "
                              f"{self.signature or 'any signature'!r} in {len(runs)} runs: nothing to bisect "
                              f"(its failures: {sorted(set(sigs)) or 'none'})")
        self.rate = failures / len(runs)
        end = Judged(self.failing_end, FAILS, len(runs), failures, len(sigs) - failures, round(built.seconds, 1),
                     cached=built.cached, unpinned=built.unpinned)
        self.append(self.log, {"signature": self.signature, "rate": self.rate, "step": asdict(end)})
        self.say(f"failing end {end.commit[:12]}: {end.failures} of {end.runs} runs failed with "
                 f"{self.signature!r} ({self.rate:.0%}); build {end.build_seconds:g} s"
                 + (f" ({end.cached})" if end.cached else "") + (f"; {end.unpinned}" if end.unpinned else ""))
        self.say_rule()

    def say_rule(self) -> None:
        self.say(f"{len(self.commits) - 2} commits between the ends; a commit is clean after {self.needed} clean runs")

    def load(self) -> None:
        """What this directory's log already holds: the failing end's measure and every verdict."""
        self.out.mkdir(parents=True, exist_ok=True)
        earlier = [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []
        if earlier and not self.rate:
            first = earlier[0]
            self.signature, self.rate = first["signature"], first["rate"]
            self.done = {j["step"]["commit"]: Judged(**j["step"]) for j in earlier[1:]}
            for j in self.done.values():
                self.search.record(j.commit, j.verdict)
            self.say(f"resumed: {len(self.done)} commits judged, rate {self.rate:.0%}, signature {self.signature!r}")
            self.say_rule()

    def next_commit(self) -> str | None:
        """The commit to run next: the failing end until it is measured, then the clean end (judged
        like any commit, not taken on trust), then the search's; None once the search is over."""
        if not self.rate:
            return self.failing_end
        if self.clean_end not in self.done:
            return self.clean_end
        return self.search.next()

    def execute(self) -> dict[str, Any]:
        self.load()
        while (commit := self.next_commit()) is not None:
            if self.rate:
                self.keep(self.judge(commit))
            else:
                self.measure()
        return self.report()

    def keep(self, j: Judged) -> None:
        """A judged commit: its verdict in the search, a line in the log to resume from, a line for
        the user; a clean end that is not clean ends the bisect."""
        if j.commit == self.clean_end and j.verdict != CLEAN:
            term = self.terms[1] if self.s.fixing else self.terms[0]
            raise ConfigError(f"--{term} {j.commit[:12]} is not clean: {self.step_line(j)}; nothing to bisect")
        self.done[j.commit] = j
        self.search.record(j.commit, j.verdict)
        self.append(self.log, {"step": asdict(j)})
        self.say(self.step_line(j))

    def state(self, verdict: str) -> str:
        """A verdict in the search's terms: bad/good for a regression, broken/fixed for a fix."""
        return {FAILS: self.terms[0] if self.s.fixing else self.terms[1],
                CLEAN: self.terms[1] if self.s.fixing else self.terms[0], SKIPPED: "skipped"}[verdict]

    def step_line(self, j: Judged) -> str:
        state = self.state(j.verdict)
        cached = f" ({j.cached})" if j.cached else ""
        return (f"{j.commit[:12]} {self.subject(j.commit)[:60]!r}: build {j.build_seconds:g} s{cached}, {j.runs} runs, "
                f"{j.failures} failed with the signature, {j.others} otherwise: {state}"
                + (f" ({j.why})" if j.why else "") + (f"; {j.unpinned}" if j.unpinned else ""))

    def subject(self, commit: str) -> str:
        return git(self.s.repo, "log", "-1", "--format=%s", commit)

    def report(self) -> dict[str, Any]:
        answer = self.search.answer()
        clean = [j.runs for j in self.done.values() if j.verdict == CLEAN]
        files = git(self.s.repo, "show", "--format=", "--name-only", answer[-1]).splitlines() if len(answer) == 1 else []
        built = [f for f in files if not any(fnmatch.fnmatchcase(f, p) for p in UNBUILT)]
        bundle = self.bundle(answer[-1]) if len(answer) == 1 else None
        doc = {"first": self.terms[1], "answer": [{"commit": c, "subject": self.subject(c)} for c in answer],
               "doubt": round(doubt(self.rate, clean), 4), "rate": self.rate, "signature": self.signature,
               "clean_runs": self.needed, "skipped": [asdict(j) for j in self.done.values() if j.verdict == SKIPPED],
               "inconsistent": self.search.inconsistent(), "files": files, "changes_what_is_built": bool(built),
               "bundle": str(bundle) if bundle else None, "steps": [asdict(j) for j in self.done.values()]}
        (self.out / "bisect.json").write_text(json.dumps(doc, indent=2) + "\n")
        self.page(doc)
        return doc

    def bundle(self, answer: str) -> Path | None:
        """`tbctl repro`'s replay bundle of a failing run at the answer's edge: the culprit's own
        (a regression), or the last broken commit's (a fix): the first of its runs that failed
        with the signature. None when its runs kept no results (or none matched)."""
        failing = answer if not self.s.fixing else self.commits[self.commits.index(answer) - 1]
        for results in sorted((self.out / "steps" / failing[:12]).glob("**/run-*/results.json")):
            try:
                doc = json.loads(results.read_text())
            except (OSError, ValueError):
                continue
            outcome, sig = repro.judge(doc)
            if sig and self.matches(sig):
                run = repro.ReproRun(int(results.parent.name.removeprefix("run-")), int(doc.get("seed") or 0),
                                     outcome=outcome, signature=sig, artifacts=results.parent)
                runs = results.parent.parent  # a shard's runs have the spec of the machine that ran them beside
                spec = runs.parent / SPEC if (runs.parent / SPEC).is_file() else self.spec
                if not spec.is_file():  # a merge given a shard's runs without the spec they ran with
                    return None
                return repro.Repro(self.s.target, 1, 1, self.s.seed, runs, spec).bundle(run)
        return None

    def page(self, doc: dict[str, Any]) -> None:
        """bisect.html: the answer, its doubt, and a row per judged commit in history's order."""
        order = {c: i for i, c in enumerate(self.commits)}
        steps = [{**asdict(j), "subject": self.subject(j.commit), "state": self.state(j.verdict),
                  "link": f"steps/{j.commit[:12]}/"} for j in sorted(self.done.values(), key=lambda j: order[j.commit])]
        (self.out / "bisect.html").write_text(render("report/bisect.html.j2", doc=doc, steps=steps, target=self.s.target,
                                                     bundle=Path(doc["bundle"]).relative_to(self.out).as_posix()
                                                     if doc["bundle"] else None, commits=len(self.commits)))

    def say(self, line: str) -> None:
        self.progress.write(f"bisect: {line}\n")
        self.progress.flush()

    @staticmethod
    def append(log: Path, record: dict[str, Any]) -> None:
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")


def compiler_links(where: Path) -> Path:
    """A directory of the compilers' names, each a link to ccache (masquerading: ccache runs the
    compiler of that name found further along PATH)."""
    where.mkdir(exist_ok=True)
    for name in COMPILERS:
        if not (where / name).is_symlink():
            (where / name).symlink_to(CCACHE)
    return where


def cache_use(stats: Path) -> str:
    """How many of a build's compiles ccache answered, from its `--print-stats` (key, tab, count);
    "" when the image has no ccache or nothing was compiled."""
    try:
        counts = dict(line.split("\t", 1) for line in stats.read_text().splitlines() if "\t" in line)
    except OSError:
        return ""
    hits = sum(int(counts.get(k, 0)) for k in ("direct_cache_hit", "preprocessed_cache_hit"))
    total = hits + int(counts.get("cache_miss", 0))
    return f"{hits} of {total} compiles from the cache" if total else ""


def run_batch(s: Settings, spec: Path, n: int, seed: int, out: Path) -> list[str]:
    """`n` runs of the test on the built tree (`tbctl repro`'s, `jobs` at once): each run's
    failure signature, "" for a run that passed."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "progress.log", "w") as progress:
        runs = repro.Repro(s.target, n, min(n, s.jobs), seed, out, spec, progress=progress).execute()
    return [x.signature if x.failed else "" for x in runs]
