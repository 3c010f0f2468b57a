"""Nightly CI at scale: shards, their merge, a baseline; on machine-free demo suites (and the
real suite list for the split itself)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import Tbctl, tbctl

from orchestrator.errors import ConfigError
from orchestrator.results import baseline, shard

REPO = Path(__file__).resolve().parent.parent
DEMOS = sorted(str(p) for p in (REPO / "tests" / "engine_suites" / "shards").glob("*.py"))
IDS = [f"suites/{m}.py::test_{t}" for m in ("a", "b", "c", "d") for t in range(3)]


def test_a_module_stays_in_one_shard_and_the_shards_cover_the_list_once() -> None:
    for total in (1, 2, 3, 5):
        parts = shard.split(IDS, total, "module", {})
        assert sorted(n for p in parts for n in p) == sorted(IDS)
        homes = {n.partition("::")[0]: k for k, p in enumerate(parts) for n in p}
        assert all(homes[n.partition("::")[0]] == k for k, p in enumerate(parts) for n in p)
        assert all(p == [n for n in IDS if n in p] for p in parts)  # each in the order given
    assert [len(p) for p in shard.split(IDS, 5, "module", {})] == [3, 3, 3, 3, 0]
    assert [len(p) for p in shard.split(IDS, 5, "test", {})] == [3, 3, 2, 2, 2]


def test_durations_balance_the_shards() -> None:
    slow = {"suites/a.py::test_0": 100.0, **{n: 1.0 for n in IDS if not n.startswith("suites/a.py")}}
    parts = shard.split(IDS, 2, "module", slow)
    assert parts[0] == [n for n in IDS if n.startswith("suites/a.py")]  # a (102 s: two unknown at the median 1 s)
    assert parts[1] == [n for n in IDS if not n.startswith("suites/a.py")]  # against b, c, d (9 s)
    assert shard.plan_id(IDS, shard.Shard(1, 2), slow) == shard.plan_id(IDS, shard.Shard(2, 2), slow)
    assert shard.plan_id(IDS, shard.Shard(1, 2), slow) != shard.plan_id(IDS, shard.Shard(1, 2), {})


@pytest.mark.parametrize("env,expected", [
    ({"TBCTL_SHARD": "2/3", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, shard.Shard(2, 3)),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, shard.Shard(1, 3)),  # GitLab counts from 1
    ({"JOB_COMPLETION_INDEX": "0", "TBCTL_SHARD_TOTAL": "4"}, shard.Shard(1, 4)),  # Kubernetes from 0
    ({"CI_NODE_TOTAL": "3"}, None), ({}, None),
])
def test_the_shard_comes_from_the_schedulers_variables(env: dict[str, str], expected: shard.Shard | None) -> None:
    assert shard.from_env(env) == expected


@pytest.mark.parametrize("env,line", [
    ({"TBCTL_SHARD": "3/2"}, "TBCTL_SHARD: '3/2' is not a shard: K/N with 1 <= K <= N, e.g. 1/4"),
    ({"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX=2 is set but not TBCTL_SHARD_TOTAL: set it to the "
                                    "number of shards"),
    ({"JOB_COMPLETION_INDEX": "4", "TBCTL_SHARD_TOTAL": "4"},
     "JOB_COMPLETION_INDEX/TBCTL_SHARD_TOTAL: '5/4' is not a shard: K/N with 1 <= K <= N, e.g. 1/4"),
])
def test_a_wrong_shard_variable_is_one_line(env: dict[str, str], line: str) -> None:
    with pytest.raises(ConfigError) as e:
        shard.from_env(env)
    assert str(e.value) == line


def listed(tmp_path: Path, *args: str) -> list[str]:
    r = tbctl(tmp_path, "list", *args)
    assert r.returncode == 0, r.stderr
    return [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")]


def test_two_shards_of_every_suite_are_disjoint_and_make_the_whole_list(tmp_path: Path) -> None:
    everything = listed(tmp_path, "--all")
    one, two = listed(tmp_path, "--all", "--shard", "1/2"), listed(tmp_path, "--all", "--shard", "2/2")
    assert one and two and not set(one) & set(two)
    assert sorted(one + two) == sorted(everything)


@pytest.mark.parametrize("args,line", [
    (["run", "--shard", "0/2", "--all"], "tbctl: --shard: '0/2' is not a shard: K/N with 1 <= K <= N, e.g. 1/4"),
    (["run"], "tbctl: name the suites to run, or --all for every suite (not both)"),
    (["run", "sw_hotplug", "--all"], "tbctl: name the suites to run, or --all for every suite (not both)"),
    (["run", "--all", "--durations", "d.json"], "tbctl: --durations d.json: not a results.json: needs exit_code "
                                                "and tests: [{nodeid, duration}, ...]"),
    (["run", "--all", "--retries", "11"], "tbctl run: argument --retries: 11: must be at least 0 and at most 10 "
                                          "(see tbctl run --help)"),
    (["merge", "nothing.json", "d.json"], "tbctl: nothing.json: No such file or directory"),
    (["merge", "bin.json"], "tbctl: bin.json: not a results.json (not JSON: 'utf-8' codec can't decode byte 0xff "
                            "in position 0: invalid start byte)"),
    (["merge", "d.json", "--baseline", "d.json", "--slower", "0"],
     "tbctl merge: argument --slower: 0: must be above 0 and at most 100 (see tbctl merge --help)"),
])
def test_bad_shard_and_merge_input_is_one_line(tmp_path: Path, tbctl_main: Tbctl, args: list[str], line: str) -> None:
    (tmp_path / "d.json").write_text('{"tests": {}, "exit_code": 0}')
    (tmp_path / "bin.json").write_bytes(b"\xff\x00")
    r = tbctl_main(*args)
    assert (r.returncode, r.stderr.strip()) == (2, line)


def run_demos(tmp_path: Path, name: str, *args: str, fail: str = "") -> dict:
    """The demo suites through tbctl run; its results.json."""
    out = tmp_path / f"{name}.json"
    r = tbctl(tmp_path, "run", *DEMOS, "--json", str(out), *args, env={"TBCTL_DEMO_FAIL": fail})
    assert r.returncode in (0, 1), r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(out.read_text())


def outcomes(doc: dict) -> dict[str, str]:
    return {t["nodeid"]: t["outcome"] for t in doc["tests"]}


def junit_names(path: Path) -> set[tuple[str | None, str | None]]:
    return {(c.get("classname"), c.get("name")) for c in ET.parse(path).getroot().iter("testcase")}


def test_the_merge_of_two_shards_is_the_unsharded_run(tmp_path: Path) -> None:
    whole = run_demos(tmp_path, "whole", "--junit", str(tmp_path / "whole.xml"))
    one, two = run_demos(tmp_path, "s1", "--shard", "1/2"), run_demos(tmp_path, "s2", "--shard", "2/2")
    assert one["shard"]["total"] == two["shard"]["total"] == 2 and one["shard"]["plan"] == two["shard"]["plan"]
    assert not set(outcomes(one)) & set(outcomes(two))
    r = tbctl(tmp_path, "merge", "s2.json", "s1.json", "--json", "m.json", "--junit", "m.xml")
    merged = json.loads((tmp_path / "m.json").read_text())
    assert (r.returncode, merged["exit_code"]) == (1, 1) == (whole["exit_code"], 1)
    assert outcomes(merged) == outcomes(whole) and list(outcomes(merged)) == list(outcomes(whole))
    assert merged["counts"] == whole["counts"] and merged["problems"] == []
    assert junit_names(tmp_path / "m.xml") == junit_names(tmp_path / "whole.xml")  # what the CI shows, per test
    failure = [c for c in ET.parse(tmp_path / "m.xml").getroot().iter("testcase") if c.find("failure") is not None]
    assert [(c.get("name"), c.find("failure").get("message")) for c in failure] == [  # type: ignore[union-attr]
        ("test_fails", "AssertionError: one and one are not three")]

    r = tbctl(tmp_path, "merge", "s1.json")
    assert r.returncode == 2 and "incomplete: shard 2/2 is missing" in r.stdout
    (tmp_path / "again.json").write_text((tmp_path / "s1.json").read_text())  # a job retried, both uploaded
    r = tbctl(tmp_path, "merge", "s1.json", "again.json", "s2.json")
    assert r.returncode == 2 and "incomplete: shard 1/2 twice: s1.json and again.json" in r.stdout
    r = tbctl(tmp_path, "merge", "s1.json", "s1.json", "s2.json")
    assert (r.returncode, r.stderr) == (2, "tbctl: s1.json: given more than once\n")
    three = run_demos(tmp_path, "t1", "--shard", "1/3")
    r = tbctl(tmp_path, "merge", "t1.json", "s2.json")
    assert r.returncode == 2 and "the shards are of different splits" in r.stdout, three
    cut = dict(two, tests=two["tests"][:1])  # a shard whose run ended early
    (tmp_path / "cut.json").write_text(json.dumps(cut))
    r = tbctl(tmp_path, "merge", "s1.json", "cut.json")
    assert r.returncode == 2 and f"cut.json: incomplete: {len(two['tests']) - 1} of its {len(two['tests'])} " \
                                 "tests have no result" in r.stdout


def test_a_shard_with_nothing_to_run_passes(tmp_path: Path) -> None:
    empty = run_demos(tmp_path, "s4", "--shard", "4/4")
    assert (empty["exit_code"], empty["tests"], empty["shard"]["tests"]) == (0, [], [])


def test_a_baseline_names_exactly_what_changed_and_only_new_failures_fail(tmp_path: Path) -> None:
    run_demos(tmp_path, "night1", fail="beta")
    r = tbctl(tmp_path, "run", *DEMOS, "--json", "night2.json", "--baseline", "night1.json",
              env={"TBCTL_DEMO_FAIL": "alpha"})
    changes = json.loads((tmp_path / "night2.json").read_text())["baseline"]["changes"]
    alpha, beta = (f"tests/engine_suites/shards/{m}.py::test_fails_when_told" for m in ("alpha", "beta"))
    assert {k: v for k, v in changes.items() if v} == {"new failure": [alpha], "fixed": [beta]}
    assert r.returncode == 1
    assert "since night1.json: 1 new failure, 1 fixed" in r.stdout
    assert f"  new failure       {alpha}  failed: AssertionError: assert 'alpha' not in 'alpha'" in r.stdout
    r = tbctl(tmp_path, "run", *DEMOS, "--json", "night3.json", "--baseline", "night2.json")
    assert r.returncode == 0, r.stdout  # beta's test_fails fails still: not new


def test_a_test_that_passes_on_a_retry_is_a_new_flake_and_does_not_fail_the_run(tmp_path: Path) -> None:
    run_demos(tmp_path, "night1")
    flaky = "tests/engine_suites/shards/gamma.py::test_flaky_when_told"
    (tmp_path / "once").mkdir()
    r = tbctl(tmp_path, "run", *DEMOS, "--json", "night2.json", "--retries", "1", "--baseline", "night1.json",
              "--html", "night2.html", env={"TBCTL_DEMO_FLAKY": str(tmp_path / "once")})
    doc = json.loads((tmp_path / "night2.json").read_text())
    changes = {k: v for k, v in doc["baseline"]["changes"].items() if v}
    assert (r.returncode, changes) == (0, {"new flake": [flaky]}), r.stdout[-3000:]
    (test,) = [t for t in doc["tests"] if t["nodeid"] == flaky]
    assert test["outcome"] == "passed" and [a["signature"] for a in test["attempts"]] == [
        "failed: AssertionError: first attempt fails"]
    assert f"  new flake         {flaky}  attempt 1: failed: AssertionError: first attempt fails" in r.stdout
    assert "flaky: attempt 1: failed: AssertionError: first attempt fails" in r.stdout  # the run's own summary
    assert "(flaky)" in (tmp_path / "night2.html").read_text()
    (tmp_path / "again").mkdir()  # without retries the same first failure is a new failure
    r = tbctl(tmp_path, "run", *DEMOS, "--json", "night3.json", "--baseline", "night1.json",
              env={"TBCTL_DEMO_FLAKY": str(tmp_path / "again")})
    assert r.returncode == 1 and f"  new failure       {flaky}" in r.stdout


def test_slower_and_failing_differently() -> None:
    def doc(*tests: tuple[str, str, float, str]) -> dict:
        return {"exit_code": 1, "tests": [{"nodeid": n, "outcome": o, "duration": d, "message": m}
                                          for n, o, d, m in tests]}
    base = doc(("a", "passed", 10.0, ""), ("b", "passed", 1.0, ""), ("c", "failed", 1.0, "AssertionError: x"),
               ("d", "guest crashed", 5, "guest crashed: BUG at 0x1"), ("gone", "passed", 1.0, ""))
    now = doc(("a", "passed", 16.0, ""), ("b", "passed", 1.9, ""), ("c", "failed", 1.0, "AssertionError: y"),
              ("d", "guest crashed", 5, "guest crashed: BUG at 0x2"), ("new", "known failure", 1.0, ""))
    changes = baseline.compare(base, now, 0.5)
    assert {k: v for k, v in changes.items() if v} == {
        "slower": ["a"],  # b: 90 % slower but not a second
        "fails differently": ["c"],  # d: the same signature, addresses aside
        "new test": ["new"], "gone": ["gone"]}
    assert baseline.exit_code(now, changes) == 1
