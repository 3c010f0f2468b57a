"""`tbctl repro`: statistics, signatures, seeds and the replay bundle; end to end on a flaky test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import runspec
from orchestrator.results import repro

REPO = Path(__file__).resolve().parent.parent
FLAKY = REPO / "tests" / "engine_suites" / "flaky.py"


def test_wilson_interval() -> None:
    lo, hi = repro.wilson(6, 20)
    assert 0.14 < lo < 0.16 and 0.51 < hi < 0.53  # 30% of 20
    assert repro.wilson(0, 10)[0] == 0.0 and repro.wilson(0, 10)[1] > 0.25  # no failure seen is no proof
    assert repro.wilson(0, 0) == (0.0, 1.0)


def test_signatures_ignore_numbers_and_runs_get_the_worst_outcome() -> None:
    a = {"outcome": "failed", "message": "MissedEvent: kernel app missed remove TBCTL0001 (nvme0, cycle 3/4): "
                                         "not reported within 15 s\nmore"}
    b = dict(a, message=a["message"].replace("cycle 3/4", "cycle 1/4"))
    assert repro.signature(a) == repro.signature(b)
    results = {"tests": [{"outcome": "passed"}, a, {"outcome": "timed out", "message": "TestDeadline: fired"}]}
    assert repro.judge(results) == ("timed out", "timed out: TestDeadline: fired")
    assert repro.judge({"tests": []})[0] == "infrastructure error"
    # a QEMU crash site is a file offset of one build: it stays in the signature
    crashed = {"outcome": "qemu crashed", "message": "qemu crashed: QEMU SIGSEGV at qemu-system-x86_64+0xaee864 "
                                                     "under memory_region_dispatch_write\nMachineError: 3 s"}
    assert repro.signature(crashed) == ("qemu crashed: QEMU SIGSEGV at qemu-system-x86_64+0xaee864 "
                                        "under memory_region_dispatch_write")  # the outcome said once
    assert repro.judge({"tests": [crashed, {"outcome": "timed out", "message": "x"}]})[0] == "qemu crashed"


def test_run_seeds_come_from_the_repro_seed(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    one = repro.Repro("x", 5, 1, 42, tmp_path, spec).seeds()
    assert one == repro.Repro("x", 5, 2, 42, tmp_path, spec).seeds() and len(set(one)) == 5
    assert one != repro.Repro("x", 5, 1, 43, tmp_path, spec).seeds()


def tbctl(cwd: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TBCTL_ARTIFACTS=str(cwd / "art"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.mark.vm
def test_repro_measures_a_flaky_test_and_replays_a_failure(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "repro", str(FLAKY), "-n", "20", "--jobs", "2", "--seed", "2026")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r"repro: 20 of 20 runs, (\d+) failed: failure rate (\d+)% \(95% CI (\d+)%-(\d+)%\), seed 2026",
                  r.stdout)
    assert m, r.stdout
    failed, lo, hi = int(m[1]), int(m[3]), int(m[4])
    assert lo <= 30 <= hi and 2 <= failed <= 10  # the test fails 30% of the time; 20 runs measure that
    assert "failed: AssertionError: the fault fired inside the race window (N < N)" in r.stdout
    assert "runs 20/20" in r.stderr
    bundle = Path(re.search(r"repro bundle: (\S+)", r.stdout)[1])  # type: ignore[index]
    meta = json.loads((bundle / "run.json").read_text())
    assert meta["outcome"] == "failed" and meta["image"]["digest"] and list(bundle.glob("qemu-*.argv"))
    assert runspec.load(bundle / "spec.json").known_failures is None  # the repro's settings: every failure counts
    # the bundle replays the failing run: same seed, same failure
    replay = subprocess.run([str(bundle / "replay.sh"), "--json", str(tmp_path / "replay.json")], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path,
                            env=dict(os.environ, TBCTL_ARTIFACTS=str(tmp_path / "art2"),
                                     PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    assert replay.returncode == 1, replay.stdout[-2000:]
    again = json.loads((tmp_path / "replay.json").read_text())
    assert again["seed"] == meta["seed"] and repro.judge(again) == (meta["outcome"], meta["signature"])


def test_a_repro_inside_one_shard_of_a_pipeline_runs_its_test_every_time(tmp_path: Path) -> None:
    """A repro (or a bisect's runs) started by a job that is itself shard 2 of 2 (GitLab's
    `parallel:` variables) runs the whole test each run: the runs are not shards of anything."""
    demo = str(REPO / "tests" / "engine_suites" / "shards" / "gamma.py") + "::test_passes"
    env = dict(os.environ, CI_NODE_INDEX="2", CI_NODE_TOTAL="2", TBCTL_ARTIFACTS=str(tmp_path / "art"))
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "repro", demo, "-n", "2", "--jobs", "1"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "repro: 2 of 2 runs, 0 failed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_a_repro_makes_the_saves_of_the_machines_its_test_starts(tmp_path: Path) -> None:
    """The shapes a repro saves before its runs are those its test starts: a bed suite's
    machines by role, a one-machine test's topology (each once), not the run's default."""
    from orchestrator.config import bed as beds
    from orchestrator.config import topology
    from orchestrator.engine import run as engine_run

    spec = runspec.RunSpec().dump(tmp_path / "spec.json")
    bed_suite = str(REPO / "tests" / "engine_suites" / "demo_bed.py")
    assert engine_run.topologies_of([bed_suite], spec) == list(beds.pair().machines.values())
    assert engine_run.topologies_of([str(FLAKY)], spec) == [topology.default()]
