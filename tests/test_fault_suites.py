"""The suites of the device-side faults, end to end on the default QEMU: media errors through
blkdebug (suites/nvme_media_errors.py), a command held there (suites/nvme_io_stalls.py), PCIe AER errors on a root port (suites/nvme_pcie_errors.py),
resets from either side of the driver (suites/nvme_resets.py) and a subsystem's namespace detached and
attached (suites/nvme_namespaces.py), each test's fault on its
schedule, on the host's QEMU and on Debian's backports; the two failures the guest cannot recover
from are the project's known failures, with their reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tbctl


@pytest.mark.vm
@pytest.mark.parametrize("qemu", ["host", "backports"])
def test_the_device_fault_suites_pass_with_their_known_failure(tmp_path: Path, request: pytest.FixtureRequest,
                                                               qemu: str) -> None:
    """On the host's QEMU and on Debian's backports (7.2 and 10.0 on a bookworm host): the same
    outcomes, the same two known failures."""
    chosen = ["--qemu", str(request.getfixturevalue("backports").path)] if qemu == "backports" else []
    r = tbctl(tmp_path, "run", "nvme_media_errors", "nvme_io_stalls", "nvme_pcie_errors", "nvme_resets", "nvme_namespaces",
              "nvme_smart_warnings", *chosen, "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    tests = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    assert {k: t["outcome"] for k, t in tests.items()} == {
        "test_a_read_error_reaches_the_reader_with_its_block": "passed",
        "test_a_write_fault_reaches_the_writer": "passed",
        "test_a_block_that_fails_once_shows_to_a_command_no_one_retries": "passed",
        "test_spdk_perf_gets_the_read_error": "skipped",  # SPDK's own app: tests/test_spdk_real.py
        "test_a_held_read_takes_the_holds_time_and_completes": "passed",
        "test_a_hold_the_guests_timeout_would_cut_short_is_refused": "passed",
        "test_spdk_perf_waits_out_the_hold": "skipped",
        "test_a_non_fatal_error_is_logged_and_needs_no_reset": "passed",
        "test_a_fatal_error_resets_the_link_and_the_controller_comes_back": "known failure",
        "test_a_correctable_error_is_reported_or_recorded_as_the_qemu_does": "passed",
        "test_spdk_perf_reads_on_through_a_non_fatal_error": "skipped",
        "test_the_drivers_own_controller_reset_waits_for_its_io": "passed",
        "test_the_drivers_own_flr_waits_for_its_io": "passed",
        "test_a_flr_behind_the_drivers_back_fails_its_io_and_removes_the_controller": "passed",
        "test_a_controller_disabled_behind_the_drivers_back_is_reset_and_its_io_completes": "known failure",
        "test_spdk_bdev_nvme_resets_a_controller_disabled_behind_its_back": "skipped",
        "test_a_detached_namespace_leaves_the_guest_and_comes_back_attached": "passed",
        "test_a_reader_of_a_detached_namespace_gets_an_error": "passed",
        "test_the_warning_is_in_the_smart_log_and_linux_gets_no_aer": "passed",
        "test_spdk_aer_app_gets_the_smart_aer": "skipped",
    }, r.stdout[-3000:]
    # each fault fired on the test's schedule: what fired, after which delay
    read = tests["test_a_read_error_reaches_the_reader_with_its_block"]
    assert [what for what, *_ in read["schedule"]] == ["media-error nvme0 ns 1 LBA 8-15 read", "media-clear nvme0 ns 1",
                                                       "media-clear nvme0 ns 1"]
    fatal = tests["test_a_fatal_error_resets_the_link_and_the_controller_comes_back"]
    assert "Data Link Layer Link Active not set" in fatal["message"] and "QEMU does not report" in fatal["known"]["reason"]
    assert [what for what, *_ in fatal["schedule"]] == ["pcie-aer nvme1 DLP"]
    detach = tests["test_a_detached_namespace_leaves_the_guest_and_comes_back_attached"]
    assert [what for what, *_ in detach["schedule"]] == ["ns-detach nvme0 --ns 2", "ns-attach nvme0 --ns 2"]
    assert tests["test_spdk_aer_app_gets_the_smart_aer"]["message"].startswith("needs an SPDK tree")
    smart = tests["test_the_warning_is_in_the_smart_log_and_linux_gets_no_aer"]
    assert [what for what, *_ in smart["schedule"]] == [f"smart-warning nvme0 {b}" for b in ("spare", "temperature", "none")]
    flr = tests["test_a_flr_behind_the_drivers_back_fails_its_io_and_removes_the_controller"]
    assert [what for what, *_ in flr["schedule"]] == ["reset nvme1 flr (host)"]
