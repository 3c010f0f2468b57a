"""Known-failure rules: which failures they match (the file's mistakes are in test_engine.py)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import expunge

RUN = {"kernel": "6.1.0-50-amd64", "qemu": "7.2.22", "spdk": None}
HUNG = "guest crashed: INFO: task hung in ib_uverbs_remove_one"


def rules(*known: dict[str, str]) -> expunge.Expunge:
    return expunge.parse({"known": list(known)}, "k.toml")


def test_brackets_match_themselves_and_star_is_the_only_wildcard() -> None:
    e = rules({"test": "nvmf_device_removal::*[*-rdma]", "signature": "guest crashed: INFO: task hung in *",
               "reason": "rxe teardown under a live connection"})
    assert e.match("nvmf_device_removal::test_nic_pulled[kernel_target-kernel_host-rdma]", HUNG, RUN)
    assert not e.match("nvmf_device_removal::test_nic_pulled[kernel_target-kernel_host-tcp]", HUNG, RUN)
    assert not e.match("nvmf_device_removal::test_nic_pulled[kernel_target-kernel_host-rdma]",
                       "guest crashed: BUG: kernel NULL pointer dereference in rxe_qp_do_cleanup", RUN)
    assert not rules({"test": "s::t[a]", "reason": "r"}).match("s::ta", HUNG, RUN)  # not a character class


def test_versions_narrow_a_rule_and_an_unknown_version_never_matches() -> None:
    e = rules({"test": "s::t", "reason": "r", "kernel": "6.1.*", "qemu": "7.2.*"})
    assert e.match("s::t", HUNG, RUN)
    assert not e.match("s::t", HUNG, {**RUN, "qemu": "10.0.2"})
    spdk = rules({"test": "s::t", "reason": "r", "spdk": "24.09*"})
    assert not spdk.match("s::t", HUNG, RUN)  # a run without an SPDK tree
    assert spdk.match("s::t", HUNG, {**RUN, "spdk": "24.09.1"})


def test_the_projects_own_list_applies_to_a_run_unless_told_otherwise(tmp_path: Path) -> None:
    from orchestrator.cli import runs
    from orchestrator.cli.app import parser
    from orchestrator.cli.common import KNOWN_FAILURES
    from orchestrator.config.runspec import RunSpec

    def spec(*argv: str) -> RunSpec:
        args = parser().parse_args(["run", "sw_hotplug", *argv])
        return runs.run_spec(args, runs.base_spec(args))

    own = expunge.load(KNOWN_FAILURES)  # a run reads it before anything boots: its mistakes fail here first
    assert any(r.test.startswith("sw_hotplug::") and r.signature and "qemu crashed" in r.signature for r in own.rules)
    assert spec().known_failures == KNOWN_FAILURES
    assert spec("--expunge", "none").known_failures is None
    mine = tmp_path / "mine.toml"
    mine.write_text("[[known]]\ntest = 'a::b'\nreason = 'r'\n")
    assert spec("--expunge", str(mine)).known_failures == mine
    # a spec file's choice (a repro's: no list) holds unless an option changes it
    saved = RunSpec(seed=5, jitter=0.0).dump(tmp_path / "spec.json")
    assert spec("--spec", str(saved)).known_failures is None
    assert (spec("--spec", str(saved), "--seed", "7").seed, spec("--spec", str(saved)).jitter) == (7, 0.0)
