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


def test_the_projects_own_list_knows_the_initiator_stuck_after_a_reset_only_when_it_is_stuck() -> None:
    """Real messages of the 6.1 initiator whose target went away during a reset's reconnect: its
    rule needs fio's tasks stuck in the kernel, and a fio merely slow to stop stays a failure."""
    from orchestrator.cli.common import KNOWN_FAILURES
    from orchestrator.results.repro import signature

    own = expunge.load(KNOWN_FAILURES)
    stuck = ("DeadlineError: fio on /dev/nvme0n1 over rdma: still running 20 s after its controller nvme0 went "
             "'deleting (no IO)' (killed; "
             "stuck in the kernel: fio (D) in __blk_mq_alloc_requests <- blk_mq_submit_bio <- "
             "submit_bio_noacct_nocheck; fio (D) in exit_aio <- __mmput <- do_exit)\n"
             "stuck tasks: fio 349, 352, 350 (D) in __blk_mq_alloc_requests <- blk_mq_submit_bio <- "
             "submit_bio_noacct_nocheck; fio 351 (D) in exit_aio <- __mmput <- do_exit")
    slow = "DeadlineError: fio on /dev/nvme0n1 over tcp: still running 80 s after its target was stopped (killed)"
    test = "nvmf_shutdown::test_target_stopped_under_io[spdk_target-kernel_host-rdma]"

    def known(message: str, test_id: str = test) -> bool:
        return own.match(test_id, signature({"outcome": "timed out", "message": message}), RUN) is not None

    assert known(stuck) and known(stuck.replace("rdma", "tcp"), test.replace("rdma", "tcp"))
    assert not known(slow)
    assert not known(stuck, test.replace("kernel_host", "spdk_host"))
    assert own.match(test, signature({"outcome": "timed out", "message": stuck}), {**RUN, "kernel": "6.12.1"}) is None
