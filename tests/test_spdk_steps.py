"""SPDK's run_test steps read from a script's output (orchestrator/report/spdk_steps.py). The
samples in tests/spdk_output/ are what SPDK v24.09's own test/common/autotest_common.sh printed
(the lines of SPDK's source its backtraces quote are left out, paths are the guest's): for a
script of two nested steps, the second failing (run on a host with its run_test, xtrace on); and
for test/nvme/nvme.sh's nvme_startup step failing its time limit in a TCG guest (tbctl run)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.report import spdk_steps

SAMPLES = Path(__file__).resolve().parent / "spdk_output"


def test_nested_steps_a_failure_and_its_backtrace() -> None:
    steps = spdk_steps.steps((SAMPLES / "run_test_nested_failure.txt").read_text().splitlines())
    by = {s.name: s for s in steps}
    assert [s.name for s in steps] == ["outer", "outer.inner_ok", "outer.inner_bad"]  # test_domain's names
    assert (by["outer.inner_ok"].status, by["outer.inner_ok"].seconds) == ("passed", 0.579)
    bad = by["outer.inner_bad"]
    assert (bad.status, bad.seconds) == ("failed", 1.836)  # bash's `time` still reported it
    # the most telling line before the backtrace, never the xtrace of the command that echoed it
    assert bad.error.startswith("[2026-12-06 05:12:41.123456] nvme_pcie_common.c: 123:") and "*ERROR*" in bad.error
    assert bad.backtrace.startswith("========== Backtrace start: ==========")
    assert bad.backtrace.endswith("========== Backtrace end ==========")
    assert "in test/demo/steps.sh:7 -> inner_bad([])" in bad.backtrace
    assert (by["outer"].status, by["outer"].error, by["outer"].seconds) == ("failed", "step outer.inner_bad failed",
                                                                            2.576)


def test_output_cut_short_leaves_the_steps_it_was_in_unfinished() -> None:
    lines = (SAMPLES / "run_test_nested_failure.txt").read_text().splitlines()
    cut = lines[:next(i for i, ln in enumerate(lines) if "Failure: test_write_invalid_db" in ln) + 1]
    steps = {s.name: s for s in spdk_steps.steps(cut)}  # a script killed at its deadline, or its machine lost
    assert steps["outer.inner_ok"].status == "passed"
    assert [(steps[n].status, steps[n].seconds) for n in ("outer", "outer.inner_bad")] == [("unfinished", None)] * 2
    assert spdk_steps.steps([]) == [] and spdk_steps.steps(["END TEST x", "random text"]) == []


def test_a_step_ending_out_of_order_is_not_taken_for_another() -> None:
    lines = ["START TEST a", "START TEST b", "END TEST a", "END TEST b"]  # b's END closes b; a never ended
    steps = {s.name: s.status for s in spdk_steps.steps(lines)}
    assert steps == {"a": "unfinished", "a.b": "passed"}


def test_a_failure_outside_any_step_is_placed_by_its_backtrace() -> None:
    """SPDK's test/nvme/sw_hotplug.sh (v24.09) has no run_test steps of its own: when it fails,
    its last backtrace says where, and the error line before it why."""
    lines = ["tbctl: running test/nvme/sw_hotplug.sh", " 12:06:07  -- nvme/sw_hotplug.sh@109 -- # spdk_tgt",
             "[2026-12-06 12:06:07.098872] iscsi_subsystem.c:  74:iscsi_initialize_pdu_pool: *ERROR*: create PDU "
             "immediate data pool failed", "ERROR: process (pid: 623) is no longer running",
             " 12:06:12  -- common/autotest_common.sh@10 -- # set +x", "========== Backtrace start: ==========", "",
             "in test/nvme/sw_hotplug.sh:113 -> tgt_run_hotplug([])", "     ...", "=> 113 \t\twaitforlisten $pid",
             "in test/nvme/sw_hotplug.sh:151 -> main([])", "", "========== Backtrace end ==========",
             "Process with pid 623 is not found"]
    f = spdk_steps.failure(lines)
    assert f is not None and str(f) == ("at test/nvme/sw_hotplug.sh:113 in tgt_run_hotplug: [2026-12-06 "
                                        "12:06:07.098872] iscsi_subsystem.c:  74:iscsi_initialize_pdu_pool: *ERROR*: "
                                        "create PDU immediate data pool failed")
    assert f.backtrace.splitlines()[0] == "========== Backtrace start: ==========" and f.backtrace.endswith("end ==========")
    assert spdk_steps.steps(lines) == [] and spdk_steps.failure(lines[:5]) is None


def test_an_apps_failure_verdict_fails_its_step_although_it_exited_0() -> None:
    """SPDK's nvme.sh passes its nvme_doorbell_aers step while the app printed "Failure:" for its
    cases (run beside the stub, as in SPDK's CI): tbctl does not."""
    lines = ["START TEST nvme", "START TEST nvme_doorbell_aers", "Executing: test_write_invalid_db",
             "Failure: test_write_invalid_db", "real\t0m1.5s", "END TEST nvme_doorbell_aers",
             "START TEST nvme_ok", "Success: x", "real\t0m0.1s", "END TEST nvme_ok", "real\t0m2.0s", "END TEST nvme"]
    by = {s.name: s for s in spdk_steps.app_verdicts(lines, spdk_steps.steps(lines))}
    assert (by["nvme.nvme_doorbell_aers"].status, by["nvme.nvme_doorbell_aers"].error) == (
        "failed", "Failure: test_write_invalid_db (its app exited 0 all the same)")
    assert (by["nvme"].status, by["nvme"].error) == ("failed", "step nvme.nvme_doorbell_aers failed")
    assert by["nvme.nvme_ok"].status == "passed" and by["nvme.nvme_doorbell_aers"].seconds == 1.5


def test_a_complaint_in_plain_words_is_the_error_line_when_nothing_says_error() -> None:
    """nvme_startup fails its time limit under TCG: the app says so on stderr, first (stdout is a
    pipe's, flushed at exit), with no "error" or "fail" anywhere; that line, not the last one."""
    (startup,) = spdk_steps.steps((SAMPLES / "nvme_startup_too_long.txt").read_text().splitlines())
    assert (startup.name, startup.status) == ("nvme_startup", "failed")
    assert startup.error == "Too long time for initialization."
    assert "in test/nvme/nvme.sh:99 -> main([])" in startup.backtrace


def test_an_apps_crash_in_a_step_that_passed_makes_it_a_guest_crash() -> None:
    """SPDK v24.09's shutdown.sh ends nvmf_shutdown_tc4 with `wait $perfpid || true`: the step
    passes after spdk_nvme_perf failed #3569's assertion. Its step (and the steps around it) are
    a guest crash titled by the assertion; a crash between steps stays the script's."""
    perf = ("/mnt/spdk/build/bin/spdk_nvme_perf -q 128 -o 45056 -O 4096 -w randwrite -t 20 -r 'trtype:rdma "
            "adrfam:IPV4 traddr:192.168.100.8 trsvcid:4420' -P 4")
    lines = ["START TEST nvmf_shutdown", "START TEST nvmf_shutdown_tc1", "real\t0m1.0s", "END TEST nvmf_shutdown_tc1",
             "START TEST nvmf_shutdown_tc4", "Initializing NVMe Controllers",
             " 12:00:01 nvmf_shutdown.nvmf_shutdown_tc4 -- target/shutdown.sh@148 -- # wait 1234",
             "spdk_nvme_perf: nvme_rdma.c:1837: nvme_rdma_qpair_destroy: Assertion `qpair->poll_group' failed.",
             f"/mnt/spdk/test/nvmf/target/shutdown.sh: line 148:  1234 Aborted                 (core dumped) {perf}",
             "real\t0m21.0s", "END TEST nvmf_shutdown_tc4", "real\t0m23.0s", "END TEST nvmf_shutdown",
             "Segmentation fault      (core dumped) ./cleanup"]
    by = {s.name: s for s in spdk_steps.app_crashes(lines, spdk_steps.steps(lines))}
    tc4 = by["nvmf_shutdown.nvmf_shutdown_tc4"]
    assert (tc4.status, tc4.error) == ("guest crashed", "Assertion `qpair->poll_group' failed in nvme_rdma_qpair_destroy")
    assert "nvme_rdma.c:1837" in tc4.backtrace and tc4.seconds == 21.0
    assert (by["nvmf_shutdown"].status, by["nvmf_shutdown"].error) == (
        "guest crashed", "Assertion `qpair->poll_group' failed in nvme_rdma_qpair_destroy "
                         "(in step nvmf_shutdown.nvmf_shutdown_tc4)")
    assert by["nvmf_shutdown.nvmf_shutdown_tc1"].status == "passed"
