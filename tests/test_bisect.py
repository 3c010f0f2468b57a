"""tbctl bisect's search and its flake rule (orchestrator/results/bisect_rule.py), on simulated
histories: a failure that shows in a fraction of runs from one commit on (or until one), a commit
that does not build, another failure that is neither good nor bad."""

from __future__ import annotations

import random

import pytest

from orchestrator.results.bisect_rule import ALPHA, CLEAN, FAILS, SKIPPED, Search, Step, clean_runs, doubt

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
