"""tbctl bisect's search and its flake rule (orchestrator/results/bisect_rule.py), on simulated
histories: a failure that shows in a fraction of runs from one commit on (or until one), a commit
that does not build, another failure that is neither good nor bad."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Tbctl, tbctl

from orchestrator.config.runspec import RunSpec
from orchestrator.errors import ConfigError, TbctlError
from orchestrator.image import Image
from orchestrator.results import bisect, bisect_fanout
from orchestrator.results.bisect_rule import ALPHA, CLEAN, FAILS, SKIPPED, Search, Step, clean_runs, doubt
from orchestrator.results.shard import Shard

REPO = Path(__file__).resolve().parent.parent
SIG = "guest crashed: Assertion `qpair->poll_group' failed in nvme_rdma_qpair_destroy"
OTHER = "timed out: TestDeadline: test deadline of N s fired"


def test_a_clean_verdict_needs_the_runs_a_commit_with_the_bug_would_have_failed_in() -> None:
    assert clean_runs(1.0, 10) == 10  # never fewer than asked
    assert clean_runs(0.5, 3) == 5  # 0.5^5 = 3 % < 5 %, 0.5^4 = 6 % is not
    assert clean_runs(0.2, 10) == 14  # 0.8^14 = 4.4 %
    assert (1 - 0.2) ** clean_runs(0.2, 1) <= ALPHA < (1 - 0.2) ** (clean_runs(0.2, 1) - 1)
    with pytest.raises(ValueError, match="failure rate 0"):
        clean_runs(0.0, 10)


def test_the_doubt_is_the_chance_a_clean_verdict_hid_the_bug() -> None:
    assert doubt(0.5, []) == 0.0
    assert doubt(0.5, [5]) == pytest.approx(0.5 ** 5)
    assert doubt(0.2, [14, 14, 14]) == pytest.approx(1 - (1 - 0.8 ** 14) ** 3)


def test_a_step_fails_at_its_first_match_is_clean_after_enough_and_skipped_past_its_limit() -> None:
    s = Step(needed=3, max_runs=5, matches=lambda sig: sig == SIG)
    for sig in ("", OTHER, ""):
        s.add(sig)
    assert (s.verdict, s.clean, s.others, s.wanted()) == (None, 2, 1, 1)
    s.add(SIG)
    assert (s.verdict, s.failures, s.wanted()) == (FAILS, 1, 0)
    clean = Step(needed=2, max_runs=5, matches=lambda sig: sig == SIG)
    clean.add("")
    clean.add("")
    assert clean.verdict == CLEAN
    noisy = Step(needed=2, max_runs=3, matches=lambda sig: sig == SIG)
    for _ in range(3):
        noisy.add(OTHER)  # another failure every time: neither verdict
    assert (noisy.verdict, noisy.signatures) == (SKIPPED, [OTHER] * 3)


def simulate(commits: int, first_new: int, rate: float, fixing: bool, seed: int, broken: frozenset[int] = frozenset(),
             noise: float = 0.0) -> tuple[Search, list[int], int]:
    """The whole loop as tbctl bisect runs it, on a history where the failure shows at `rate`
    from `first_new` on (a regression) or until just before it (a fix)."""
    rng = random.Random(seed)
    names = [f"c{i:02d}" for i in range(commits)]
    search = Search(names, fixing=fixing)
    needed, clean_counts, runs = clean_runs(rate, 10), [], 0
    while (c := search.next()) is not None:
        i = names.index(c)
        if i in broken:
            search.record(c, SKIPPED)
            continue
        has_bug = (i >= first_new) != fixing
        step = Step(needed, needed * 2, lambda sig: sig == SIG)
        while step.verdict is None:
            roll = rng.random()
            step.add(SIG if has_bug and roll < rate else OTHER if roll > 1 - noise else "")
        runs += step.runs
        search.record(c, step.verdict)
        if step.verdict == CLEAN:
            clean_counts.append(step.runs)
    return search, clean_counts, runs


@pytest.mark.parametrize("fixing", [False, True])
def test_a_flaky_regression_or_fix_is_found_most_of_the_time_and_its_doubt_says_how_often_not(fixing: bool) -> None:
    """At a 30 % rate, over 40 commits: the answer is the right commit in at least the share the
    doubt promises (and the doubt is what the rule allows), over 200 seeded searches."""
    right, doubts = 0, []
    for seed in range(200):
        search, clean_counts, _ = simulate(40, 23, 0.3, fixing, seed)
        right += search.answer() == ["c23"]
        doubts.append(doubt(0.3, clean_counts))
    assert max(doubts) < 0.25  # a handful of clean verdicts, each wrong at most ALPHA
    assert right / 200 >= 1 - sum(doubts) / 200 - 0.05, (right, sum(doubts) / 200)


def test_a_commit_that_does_not_build_is_gone_around_and_named_when_it_could_be_the_culprit() -> None:
    search, _, _ = simulate(20, 9, 1.0, False, 1, broken=frozenset({8}))
    assert search.answer() == ["c08", "c09"]  # c08 did not build: it may be the one
    assert search.verdicts[7] == CLEAN and search.verdicts[8] == SKIPPED
    later, _, _ = simulate(20, 9, 1.0, False, 1, broken=frozenset({12}))
    assert later.answer() == ["c09"]  # a skip past the culprit changes nothing


def test_another_failure_is_neither_good_nor_bad() -> None:
    """Runs that time out (noise) at every commit: the search still finds the commit where the
    signature starts, and pays for the noise in runs, not in wrong verdicts."""
    quiet, _, quiet_runs = simulate(30, 17, 1.0, False, 3)
    noisy, _, noisy_runs = simulate(30, 17, 1.0, False, 3, noise=0.2)
    assert quiet.answer() == noisy.answer() == ["c17"]
    assert noisy_runs > quiet_runs


def test_verdicts_that_contradict_each_other_are_pointed_out() -> None:
    s = Search([f"c{i}" for i in range(6)])
    s.record("c4", CLEAN)
    s.record("c2", FAILS)  # fails before a clean one: the signature has another cause too
    assert s.bounds() == (0, 2)
    assert s.inconsistent() == ["c4"]


def history(repo: Path, first_flaky: int, broken: int, commits: int = 10) -> list[str]:
    """A stand-in SPDK repository: `state` says whether the test flakes at that commit, and
    `build.sh` fails at commit `broken` only."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()
    repo.mkdir()
    git("init", "-q", "-b", "master")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    shas = []
    for i in range(commits):
        (repo / "state").write_text("flaky\n" if i >= first_flaky else "ok\n")
        (repo / "build.sh").write_text("exit 1\n" if i == broken else "echo built > built\n")
        (repo / "lib.c").write_text(f"int version = {i};\n")
        git("add", "-A")
        git("commit", "-q", "-m", f"change {i}")
        shas.append(git("rev-parse", "HEAD"))
    return shas


def fake_runs(out: Path, rate: float) -> Callable[..., list[str]]:
    """Runs as the test would give them on the built tree: the signature at `rate` where `state`
    says flaky, and only where the build ran."""
    def runner(s: bisect.Settings, spec: Path, n: int, seed: int, where: Path) -> list[str]:
        tree = out / "tree"
        assert (tree / "built").is_file()  # judged only after its build
        rng = random.Random(seed)
        flaky = (tree / "state").read_text() == "flaky\n"
        sigs = [SIG if flaky and rng.random() < rate else "" for _ in range(n)]
        for i, sig in enumerate(sigs):  # each run's results.json, as `tbctl repro` leaves it
            (where / f"run-{i + 1:04d}").mkdir(parents=True)
            outcome, _, message = sig.partition(": ") if sig else ("passed", "", "")
            (where / f"run-{i + 1:04d}" / "results.json").write_text(json.dumps(
                {"seed": seed + i, "tests": [{"outcome": outcome, "message": message}]}))
        return sigs
    return runner


def test_bisect_finds_the_commit_in_a_real_repository_goes_around_a_broken_build_and_resumes(
        guest_image: Image, tmp_path: Path) -> None:
    shas = history(tmp_path / "spdk", first_flaky=6, broken=5)
    status = subprocess.run(["git", "-C", str(tmp_path / "spdk"), "status", "--porcelain"], capture_output=True,
                            text=True).stdout
    settings = bisect.Settings(tmp_path / "spdk", shas[0], shas[-1], False, "sw_hotplug", None, 4, None, "sh build.sh",
                               60, 1, 7)
    out = tmp_path / "b"
    progress = io.StringIO()
    doc = bisect.Bisect(settings, out, RunSpec().dump(tmp_path / "spec.json"), guest_image, progress, fake_runs(out, 0.5)).execute()
    # commit 5 did not build: the answer is 5 or 6, and says so
    assert [a["subject"] for a in doc["answer"]] == ["change 5", "change 6"], progress.getvalue()
    assert doc["signature"] == SIG and [s["commit"] for s in doc["skipped"]] == [shas[5]]
    assert "the build exited 1" in doc["skipped"][0]["why"]
    assert doc["clean_runs"] == clean_runs(doc["rate"], 4)  # at the rate the failing end showed
    assert doc["doubt"] == pytest.approx(doubt(doc["rate"], [s["runs"] for s in doc["steps"] if s["verdict"] == CLEAN]),
                                         abs=1e-4) and doc["doubt"] > 0
    assert "failing end" in progress.getvalue() and "skipped (the build exited 1" in progress.getvalue()
    page = (out / "bisect.html").read_text()  # a row per judged commit, in history's order
    rows = re.findall(r"<td>(change \d+)</td>", page)
    assert rows == sorted(rows, key=lambda r: int(r.split()[1])) and len(rows) == len(doc["steps"])
    assert '<td class="s-skipped">skipped<br><small>the build exited 1' in page and doc["bundle"] is None
    # the user's repository: not a file changed, no worktree added
    assert subprocess.run(["git", "-C", str(tmp_path / "spdk"), "status", "--porcelain"], capture_output=True,
                          text=True).stdout == status
    assert subprocess.run(["git", "-C", str(tmp_path / "spdk"), "worktree", "list"], capture_output=True,
                          text=True).stdout.count("\n") == 1
    # resumed from its log: nothing judged again, the same answer
    steps = (out / "steps.jsonl").read_text()
    again = bisect.Bisect(settings, out, RunSpec().dump(tmp_path / "spec.json"), guest_image, io.StringIO(),
                          lambda *a: pytest.fail("a judged commit was run again")).execute()
    assert again["answer"] == doc["answer"] and (out / "steps.jsonl").read_text() == steps


def test_the_fix_of_a_failure_is_found_with_the_fixed_and_broken_terms(guest_image: Image, tmp_path: Path) -> None:
    shas = history(tmp_path / "spdk", first_flaky=0, broken=-1)
    repo = tmp_path / "spdk"
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", shas[-1]], check=True)
    (repo / "state").write_text("ok\n")  # fixed from here on
    for i in range(3):
        (repo / "lib.c").write_text(f"int fixed = {i};\n")
        subprocess.run(["git", "-C", str(repo), "commit", "-qam", f"fix {i}"], check=True)
    fixed = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    settings = bisect.Settings(repo, shas[0], fixed, True, "sw_hotplug", "guest crashed: Assertion*", 3, None,
                               "sh build.sh", 60, 1, 3)
    out = tmp_path / "b"
    doc = bisect.Bisect(settings, out, RunSpec().dump(tmp_path / "spec.json"), guest_image, io.StringIO(), fake_runs(out, 1.0)).execute()
    assert (doc["first"], [a["subject"] for a in doc["answer"]], doc["changes_what_is_built"]) == \
        ("fixed", ["fix 0"], True)
    assert doc["steps"][0]["commit"] == fixed and doc["steps"][0]["verdict"] == "clean"  # the clean end, judged


def test_a_clean_end_that_fails_too_is_refused(guest_image: Image, tmp_path: Path) -> None:
    shas = history(tmp_path / "spdk", first_flaky=0, broken=-1, commits=4)
    settings = bisect.Settings(tmp_path / "spdk", shas[0], shas[-1], False, "sw_hotplug", None, 2, None, "sh build.sh",
                               60, 1, 5)
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match=f"^--good {shas[0][:12]} is not clean: {shas[0][:12]} 'change 0': .* 1 "
                                          "failed with the signature, 0 otherwise: bad; nothing to bisect"):
        bisect.Bisect(settings, out, RunSpec().dump(tmp_path / "spec.json"), guest_image, io.StringIO(), fake_runs(out, 1.0)).execute()


class Pipeline:
    """A CI pipeline of a planned bisect, simulated: each round's shard jobs start from a copy of
    the last merge's directory (what a scheduler's artifacts carry: no tree, no cache), on a
    machine of their own; the merge job gets the last merge's directory and the shards' parts
    and runs. `lost` says which shard jobs of which round never deliver."""

    def __init__(self, state: Path, image: Image, rate: float, lost: dict[int, set[int]] | None = None):
        self.state, self.image, self.rate, self.lost = state, image, rate, lost or {}
        self.settings = bisect.Settings.load(state / "settings.json")
        self.plan = bisect_fanout.Plan.load(state)
        self.said = io.StringIO()
        self.parts: list[dict[str, Any]] = []

    def fan(self, out: Path, image: Image | None) -> bisect_fanout.FanOut:
        spec = out / "spec.json" if image is None else RunSpec().dump(out / "spec.json")  # a shard's machine's
        b = bisect.Bisect(self.settings, out, spec, image, self.said, fake_runs(out, self.rate))
        return bisect_fanout.FanOut(b, self.plan)

    def round(self, r: int) -> dict[str, Any] | None:
        merge = self.state.parent / f"merge-{r}"
        shutil.copytree(self.state, merge)
        for k in range(1, self.plan.shards + 1):
            job = self.state.parent / f"round-{r}-shard-{k}"
            shutil.copytree(self.state, job)
            part = self.fan(job, self.image).run_share(Shard(k, self.plan.shards))
            if part is not None:
                self.parts.append(part)
            if part is not None and k not in self.lost.get(r, set()):
                for d in ("parts", "steps"):
                    shutil.copytree(job / d, merge / d, dirs_exist_ok=True)
        self.state = merge
        return self.fan(merge, None).merge()


def planned(tmp_path: Path, shas: list[str], shards: int, rounds: int, runs: int = 4) -> Path:
    state = tmp_path / "plan"
    state.mkdir()
    bisect.Settings(tmp_path / "spdk", shas[0], shas[-1], False, "sw_hotplug", None, runs, None, "sh build.sh", 60, 1,
                    7).dump(state / "settings.json")
    bisect_fanout.Plan(shards, rounds).dump(state)
    return state


def test_a_bisect_fanned_out_over_shards_splits_each_steps_runs_and_its_merges_decide(
        guest_image: Image, tmp_path: Path) -> None:
    shas = history(tmp_path / "spdk", first_flaky=6, broken=4)
    assert bisect_fanout.min_rounds(len(shas)) == 6  # the failing end, the clean end, 4 halvings of 9
    pipe = Pipeline(planned(tmp_path, shas, shards=3, rounds=10), guest_image, 1.0, lost={2: {2}})
    doc = None
    for r in range(1, 11):
        doc = pipe.round(r)
        if doc is not None:
            break
    assert doc is not None, pipe.said.getvalue()
    said = pipe.said.getvalue()
    assert [a["subject"] for a in doc["answer"]] == ["change 6"], said
    # round 1: the failing end's 4 runs, split 2, 1, 1; every run of a measure is made
    first = [p for p in pipe.parts if p["round"] == 1]
    assert [len(p["signatures"]) for p in first] == [2, 1, 1] and all(p["commit"] == shas[-1] for p in first)
    assert doc["rate"] == 1.0 and doc["clean_runs"] == 4
    # round 2: the clean end's 4 clean runs, but shard 2's part never came: 3 runs, no verdict,
    # and round 3 runs the one still wanted on shard 1 alone
    assert "round 2: no part from shards [2]" in said and f"round 2: {shas[0][:12]} has no verdict after 3 runs" in said
    third = [p for p in pipe.parts if p["round"] == 3]
    assert [len(p["signatures"]) for p in third] == [1, 0, 0] and third[0]["commit"] == shas[0]
    assert third[1]["built"] is None  # a shard with no runs builds nothing
    steps = {s["commit"]: s for s in doc["steps"]}
    assert (steps[shas[0]]["verdict"], steps[shas[0]]["runs"]) == ("clean", 4)
    # a failing commit: each shard stops at its first failure; the merge calls it at any one
    fails = [s for s in doc["steps"] if s["verdict"] == "fails"]
    assert fails and all(1 <= s["runs"] <= 3 for s in fails)
    # the failing run at the answer's edge, bundled by the merge from a shard's runs and spec
    bundle = Path(doc["bundle"])
    assert bundle.relative_to(pipe.state / "steps" / shas[6][:12]).parts[0].startswith("round-")
    assert json.loads((bundle / "run.json").read_text())["signature"] == SIG and (bundle / "spec.json").is_file()
    # the broken build: skipped, with the shard that saw it
    assert [s["commit"] for s in doc["skipped"]] == [shas[4]] and doc["skipped"][0]["why"].startswith("shard 1: ")
    # the log the one-machine bisect resumes from, and a round per merge
    rounds = (pipe.state / "rounds.jsonl").read_text().splitlines()
    assert len(rounds) == r and json.loads(rounds[-1])["round"] == r
    # a job after the answer has nothing to run, and its merge says the answer again
    assert pipe.fan(pipe.state, guest_image).run_share(Shard(1, 3)) is None
    assert pipe.fan(pipe.state, None).merge() == doc
    with pytest.raises(ConfigError, match=r"^--shard 1/2: this bisect was planned for 3 shards$"):
        pipe.fan(pipe.state, None).check(Shard(1, 2))


def test_a_pipeline_whose_rounds_run_out_says_where_the_search_stands(guest_image: Image, tmp_path: Path) -> None:
    shas = history(tmp_path / "spdk", first_flaky=6, broken=-1)
    pipe = Pipeline(planned(tmp_path, shas, shards=2, rounds=6), guest_image, 1.0, lost={r: {2} for r in range(2, 7)})
    for r in range(1, 6):  # shard 2 never delivers after round 1: a clean verdict takes rounds
        assert pipe.round(r) is None
    with pytest.raises(bisect_fanout.NotOver, match=r"^the pipeline's 6 rounds are merged and the search is not over: "
                                                    r"\d+ commits left between \w{12} and \w{12}; go on with "
                                                    r"`tbctl bisect --resume .*merge-6`$"):
        pipe.round(6)
    with pytest.raises(TbctlError, match=r"^round 7: no shard's part in .*/parts/round-7: nothing to merge$"):
        pipe.fan(pipe.state, None).merge()


def test_bisect_input_mistakes_are_one_line_before_anything_is_built(tbctl_main: Tbctl, tmp_path: Path) -> None:
    shas = history(tmp_path / "spdk", first_flaky=3, broken=-1, commits=4)
    repo = str(tmp_path / "spdk")
    for args, says in (
            ([], "tbctl: tbctl bisect TEST --repo DIR, and --good REF --bad REF (a regression) or --broken REF "
                 "--fixed REF (a fix)"),
            (["sw_hotplug", "--repo", str(tmp_path), "--good", "a", "--bad", "b"], f"tbctl: --repo {tmp_path}: not a "
                                                                                    "git repository"),
            (["sw_hotplug", "--repo", repo, "--good", "nosuch", "--bad", shas[3]], f"tbctl: --good nosuch: not a "
                                                                                  f"commit of {repo}"),
            (["sw_hotplug", "--repo", repo, "--good", shas[3], "--bad", shas[0]],
             f"tbctl: --good {shas[3][:12]} is not an ancestor of --bad {shas[0][:12]}: the search goes from the "
             "older commit to the newer one"),
            (["nosuch", "--repo", repo, "--good", shas[0], "--bad", shas[3]], "tbctl: suite 'nosuch': no "
                                                                              "suites/nosuch.py and no such file"),
            (["sw_hotplug", "--repo", repo, "--good", shas[0], "--bad", shas[3], "--spdk-dir", repo],
             "tbctl: --spdk-dir: bisect builds its own tree of --repo at each commit"),
            (["--resume", str(tmp_path)], f"tbctl: --resume {tmp_path}: no settings.json: not a bisect's directory"),
            (["--shard", "1/2"], "tbctl: --shard and --merge go with --resume DIR: the directory --plan wrote"),
            (["--resume", str(tmp_path), "--shard", "1/2", "--merge"], "tbctl: --shard K/N or --merge: a job does one"),
            (["sw_hotplug", "--repo", repo, "--good", shas[0], "--bad", shas[3], "--plan", str(tmp_path / "p"),
              "--rounds", "3"], "tbctl: --rounds 3: a search over 4 commits takes at least 4 (the failing end, the "
                                "clean end, then halving)"),
            (["sw_hotplug", "--repo", repo, "--good", shas[0], "--bad", shas[3], "--plan", repo],
             f"tbctl: --plan {repo}: not empty: a plan starts a bisect of its own")):
        r = tbctl_main("bisect", *args)
        assert r.returncode == 2 and r.stderr.strip().startswith(says), (args, r.stderr)
    assert not (tmp_path / "art").exists() and not (tmp_path / "p").exists()  # nothing made
    # a plan: checked, written, nothing built; its shards are held to it
    r = tbctl_main("bisect", "sw_hotplug", "--repo", repo, "--good", shas[0], "--bad", shas[3], "--plan",
                   str(tmp_path / "p"), "--shards", "3")
    assert (r.returncode, r.stdout) == (0, f"bisect: planned in {tmp_path / 'p'}: 4 commits, 3 shards, 8 rounds "
                                           "(at least 4)\n"), r.stderr
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["asked.json", "fanout.json", "settings.json"]
    r = tbctl_main("bisect", "--resume", str(tmp_path / "p"), "--shard", "1/2")
    assert (r.returncode, r.stderr.strip()) == (2, "tbctl: --shard 1/2: this bisect was planned for 3 shards")


@pytest.mark.vm
def test_one_real_bisect_names_the_commit_that_broke_the_stand_in(tmp_path: Path) -> None:
    """The whole command on a repository of the stand-in tree (tests/spdk_standin): each commit
    built with its own Makefile in the guest image's userland, each run a real `tbctl run` of
    nvme_doorbell_aers on it. Commit 1 makes the stand-in expect the wrong AER for an invalid
    doorbell write, commit 2 changes only its README: bisect names commit 1."""
    repo, src = tmp_path / "spdk", REPO / "tests" / "spdk_standin"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "tests/spdk_standin"], capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        (repo / Path(f).relative_to("tests/spdk_standin")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, repo / Path(f).relative_to("tests/spdk_standin"))

    def commit(message: str) -> str:
        for args in (["add", "-A"], ["commit", "-qm", message]):
            subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                           check=True)
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    subprocess.run(["git", "-C", str(repo), "init", "-q", "-b", "master"], check=True)
    good = commit("the stand-in as it is")
    aers = repo / "src" / "doorbell_aers.py"
    broken = aers.read_text().replace('t.run("test_write_invalid_db", INFO_WRITE_INVALID_DB,',
                                      't.run("test_write_invalid_db", INFO_INVALID_DB_WRITE,')
    assert broken != aers.read_text() and (src / "src" / "doorbell_aers.py").is_file()
    aers.write_text(broken)
    culprit = commit("doorbell_aers: expect the other AER")
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA line.\n")
    bad = commit("README: a line")
    r = tbctl(tmp_path, "bisect", "nvme_doorbell_aers::test_spdk_doorbell_aers", "--repo", str(repo), "--good", good,
              "--bad", bad, "--runs", "1", "--build", "make", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"the first bad commit: {culprit[:12]} 'doorbell_aers: expect the other AER'" in r.stdout, r.stdout
    (out,) = (tmp_path / "art").glob("bisect-*")
    doc = json.loads((out / "bisect.json").read_text())
    assert [(s["commit"], s["verdict"]) for s in doc["steps"]] == [(good, "clean"), (culprit, "fails")], doc
    assert doc["rate"] == 1.0
    assert doc["files"] == ["src/doorbell_aers.py"] and doc["changes_what_is_built"]
    assert "failing end" in r.stderr and (out / "steps" / bad[:12] / "build.log").is_file()
    # the image's ccache: the failing end built from nothing, the clean end (the same C) from the cache
    cached = {s["commit"]: re.fullmatch(r"(\d+) of (\d+) compiles from the cache", s["cached"]) for s in doc["steps"]}
    end = json.loads((out / "steps.jsonl").read_text().splitlines()[0])["step"]["cached"]
    assert re.fullmatch(r"0 of [1-9]\d* compiles from the cache", end), end
    hit = cached[good]
    assert hit and hit[1] == hit[2] != "0", doc["steps"]
    # the culprit's failing run, bundled for its replay; the page shows the steps
    bundle = Path(doc["bundle"])
    assert bundle.parent.parent.name == culprit[:12] and (bundle / "replay.sh").is_file()
    assert json.loads((bundle / "run.json").read_text())["signature"] == doc["signature"]
    page = (out / "bisect.html").read_text()
    assert page.count('<tr class="answer">') == 1 and culprit in page and "expect the other AER" in page


def test_a_builds_compiler_cache_use_is_read_from_ccaches_counters(tmp_path: Path) -> None:
    stats = tmp_path / "stats"
    stats.write_text("stats_updated_timestamp\t1765000000\ndirect_cache_hit\t900\npreprocessed_cache_hit\t12\n"
                     "cache_miss\t112\nfiles_in_cache\t3000\n")
    assert bisect.cache_use(stats) == "912 of 1024 compiles from the cache"
    stats.write_text("cache_miss\t0\n")
    assert bisect.cache_use(stats) == ""  # nothing compiled
    assert bisect.cache_use(tmp_path / "none") == ""  # an image without ccache


def test_submodules_come_from_the_users_copies_at_their_pins_or_as_the_user_has_them(tmp_path: Path) -> None:
    """A submodule is checked out at each commit's pin from the user's own copy (a local path:
    git >= 2.38 refuses that unless told), with the last step's build products gone; a pin the
    user's copy lacks is the user's own checkout of it, said, and the commit still built."""
    def git(repo: Path, *args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                               "-c", "protocol.file.allow=always", *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    lib, user = tmp_path / "isa-l", tmp_path / "spdk"
    for repo in (lib, user):
        repo.mkdir()
        git(repo, "init", "-q", "-b", "master")
    (lib / "v").write_text("1\n")
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "one")
    one = git(lib, "rev-parse", "HEAD")
    git(user, "submodule", "add", "-q", str(lib), "isa-l")
    git(user, "commit", "-qm", "isa-l at one")
    first = git(user, "rev-parse", "HEAD")
    (lib / "v").write_text("2\n")
    git(lib, "commit", "-qam", "two")  # upstream moved on, and SPDK with it; the user's copy never fetched it
    two = git(lib, "rev-parse", "HEAD")
    git(user, "update-index", "--cacheinfo", f"160000,{two},isa-l")
    git(user, "commit", "-qm", "isa-l at two")
    (user / "lib.c").write_text("int x;\n")
    git(user, "add", "lib.c")
    git(user, "commit", "-qm", "later")
    last = git(user, "rev-parse", "HEAD")
    b = bisect.Bisect(bisect.Settings(user, first, last, False, "sw_hotplug", None, 2, None, "true", 60, 1, 1),
                      tmp_path / "b", tmp_path / "spec.json", None)
    tree = tmp_path / "b" / "tree"
    tree.parent.mkdir()
    assert b.checkout(first) == "" and (tree / "isa-l" / "v").read_text() == "1\n"
    (tree / "isa-l" / "built.o").write_text("")
    assert b.checkout(last) == f"isa-l at {one[:12]}, yours (its pin {two[:12]} is not in your copy)"
    assert (tree / "isa-l" / "v").read_text() == "1\n" and not (tree / "isa-l" / "built.o").exists()
    assert git(user / "isa-l", "rev-parse", "HEAD") == one  # the user's copy untouched
    line = b.step_line(bisect.Judged(last, CLEAN, 2, unpinned=b.checkout(last)))
    assert line.endswith(f"good; isa-l at {one[:12]}, yours (its pin {two[:12]} is not in your copy)"), line
