"""The suite engine end to end: `tbctl run` on real VMs, outcomes, exit codes, JUnit, results.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import Tbctl, browser, tbctl

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "tests" / "engine_suites" / "demo_outcomes.py"
CRASHES = REPO / "tests" / "engine_suites" / "demo_crashes.py"
TAINT = REPO / "tests" / "engine_suites" / "demo_taint.py"
DEADLINE = REPO / "tests" / "engine_suites" / "demo_deadline.py"
KNOWN = REPO / "tests" / "engine_suites" / "demo_known.py"
KEEP = REPO / "tests" / "engine_suites" / "demo_keep.py"
QEMU_DIES = REPO / "tests" / "engine_suites" / "demo_qemu_dies.py"


def junit_cases(path: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(path).getroot().iter("testcase")}  # type: ignore[misc]


def prop(case: ET.Element, name: str) -> str | None:
    for p in case.iter("property"):
        if p.get("name") == name:
            return p.get("value")
    return None


def test_unknown_suite_is_one_line_exit_2(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", "nosuch")
    assert r.returncode == 2
    head, _, names = r.stderr.strip().partition("; known suites: ")
    assert head == "tbctl: suite 'nosuch': no suites/nosuch.py and no such file", r.stderr
    listed = names.split(", ")  # every suite module, sorted, and nothing else (a new suite needs no edit here)
    assert listed == sorted(listed) and {"sw_hotplug", "dm_mount"} <= set(listed), listed
    assert all((REPO / "suites" / f"{n}.py").is_file() for n in listed), listed


def test_a_node_id_as_tbctl_prints_it_names_the_suite_from_any_directory(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli.common import suite_paths
    monkeypatch.chdir(tmp_path)  # where no suites/ directory is
    (got,) = suite_paths(["suites/dm_mount.py::test_dm_mount"])
    assert got == f"{REPO / 'suites' / 'dm_mount.py'}::test_dm_mount"


def test_a_test_body_cannot_catch_its_own_deadline(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", str(DEADLINE), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    by = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    assert {k: t["outcome"] for k, t in by.items()} == {
        "test_expects_a_deadline_of_its_own": "timed out", "test_swallows_everything": "timed out",
        "test_catches_and_passes": "timed out"}
    limit = 0.6  # TIMEOUT 0.2 x 3 for TCG (no VM here: the scale of the default accelerator)
    assert by["test_expects_a_deadline_of_its_own"]["message"].startswith(f"TestDeadline: test deadline of {limit} s fired")
    assert by["test_catches_and_passes"]["message"] == \
        f"test deadline of {limit} s fired; no guest command in flight (and the test body caught it)"
    # the one that swallowed the first firing was ended by the next, REFIRE seconds later
    assert limit + 4 < by["test_swallows_everything"]["duration"] < limit + 10
    assert by["test_expects_a_deadline_of_its_own"]["duration"] < limit + 2


def test_known_failures_are_reported_and_do_not_fail_the_run(tmp_path: Path) -> None:
    known = REPO / "tests" / "engine_suites" / "demo_known.toml"
    r = tbctl(tmp_path, "run", str(KNOWN), "--expunge", str(known), "--json", str(tmp_path / "r.json"),
              "--junit", str(tmp_path / "j.xml"))
    res = json.loads((tmp_path / "r.json").read_text())
    by = {t["nodeid"].rsplit("::", 1)[1]: t for t in res["tests"]}
    assert {k: t["outcome"] for k, t in by.items()} == {
        "test_passes": "passed", "test_loses_its_controller": "known failure",
        "test_loses_its_controller_otherwise": "failed", "test_known_on_another_kernel": "failed",
        "test_hangs[admin[0]]": "known failure", "test_hangs[io[1]]": "timed out"}, r.stdout[-3000:]
    assert r.returncode == 1 and res["exit_code"] == 1 and res["known_failures"] == str(known)
    lost = by["test_loses_its_controller"]
    assert lost["message"] == "AssertionError: controller lost at 0x1f after 12 s"  # kept, not hidden
    assert lost["known"] == {"outcome": "failed", "test": "demo_known::test_loses_its_controller",
                             "signature": "failed: AssertionError: controller lost at N after N s",
                             "reason": "the controller goes away under load", "link": "spdk#3522"}
    assert by["test_hangs[admin[0]]"]["known"]["outcome"] == "timed out"
    assert "known (failed): the controller goes away under load [spdk#3522]" in r.stdout
    assert res["counts"]["known failure"] == 2
    cases = junit_cases(tmp_path / "j.xml")
    case = cases["test_loses_its_controller"]
    assert prop(case, "outcome") == "known failure" and case.find("failure") is None
    assert case.find("skipped").get("message") == "known failure: the controller goes away under load"
    # the same list, with only what it knows failing: a green run
    r = tbctl(tmp_path, "run", str(KNOWN), "-k", "passes or controller and not otherwise or admin",
              "--expunge", str(known), "--json", str(tmp_path / "r2.json"))
    assert r.returncode == 0, r.stdout[-3000:]
    assert [t["outcome"] for t in json.loads((tmp_path / "r2.json").read_text())["tests"]] == \
        ["passed", "known failure", "known failure"]


@pytest.mark.parametrize("content, line", [
    ("[[known]]\ntest = 'a::b'\n", "known[0].reason: must be a non-empty string: why the failure is known"),
    ("[[known]]\ntest = 'a'\nreason = 'r'\n", "known[0].test: must be SUITE::TEST"),
    ("[[known]]\ntest = 'a::b'\nreason = 'r'\nlink = 'ftp://x'\n", "known[0].link: must be a URL"),
    ("[[known]]\ntest = 'a::b'\nreason = 'r'\ndistro = 'x'\n", "known[0].distro: unknown field"),
    ("\xff\xfe", "not a text file (byte 0 is not UTF-8)"),
])
def test_a_bad_known_failure_list_is_one_line_before_anything_boots(tmp_path: Path, tbctl_main: Tbctl, content: str,
                                                                    line: str) -> None:
    bad = tmp_path / "known.toml"
    bad.write_bytes(content.encode("latin-1"))
    r = tbctl_main("run", "sw_hotplug", "--expunge", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"tbctl: {bad}: ") and line in r.stderr, r.stderr
    assert not (tmp_path / "art").exists() and "Traceback" not in r.stderr


@pytest.mark.vm
def test_outcomes_are_told_apart(tmp_path: Path, standin: Path) -> None:
    r = tbctl(tmp_path, "run", str(DEMO), "--spdk-dir", str(standin), "--junit", str(tmp_path / "j.xml"),
              "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "r.json").read_text())
    by = {t["nodeid"].rsplit("::", 1)[1]: t for t in res["tests"]}
    assert by["test_passes"]["outcome"] == "passed"
    missed = by["test_app_misses_events"]
    assert missed["outcome"] == "failed"
    assert "kernel app missed remove TBCTL0001 (nvme0, cycle 1/1)" in missed["message"]
    hung = by["test_app_hangs"]
    assert hung["outcome"] == "timed out"
    deadline = 5 * {"kvm": 1, "tcg": 3}[res["accel"]]
    assert f"test deadline of {deadline} s fired" in hung["message"] and "kernel hotplug app" in hung["message"]
    assert hung["duration"] <= deadline + 5
    assert by["test_after_the_hang_no_app_is_left"]["outcome"] == "passed"  # the hung app was killed
    assert res["exit_code"] == 1 and res["image"]["digest"] and res["qemu"]["version_line"].startswith("QEMU emulator")
    assert isinstance(res["seed"], int) and res["tbctl"]
    for t in res["tests"]:  # every test, passed or not, has its artifacts
        d = Path(t["artifacts"])
        assert (d / "console.log").exists() and (d / "dmesg.txt").exists() and (d / "qmp-events.jsonl").exists()
    assert (Path(missed["artifacts"]) / "app.log").read_text().count('"ready"') == 1
    cases = junit_cases(tmp_path / "j.xml")
    assert prop(cases["test_app_hangs"], "outcome") == "timed out"
    assert cases["test_app_hangs"].find("failure") is not None
    assert cases["test_passes"].find("failure") is None and prop(cases["test_passes"], "outcome") == "passed"
    assert "killed guest command: kernel hotplug app" in r.stdout
    dead = by["test_controller_dies_under_a_waiting_app"]
    assert dead["outcome"] == "timed out" and dead["duration"] <= deadline + 5
    assert "nvme0: controller fatal status (CSTS.CFS=1); QEMU trace: pci_nvme_err" in dead["message"]
    assert "pci_nvme_err_cfs" in dead["message"]
    # QEMU's side of the admin queue: the Identify the kernel wrote at the head could not be fetched
    assert re.search(r"nvme0: admin SQ consumed up to head \d+ of \d+ \(last fetched: \w[\w /]*\(0x\w\w, cid \d+\)\); "
                     r"newest completion cid \d+ status 0x0; next entry in the queue at the head: Identify \(0x06, "
                     r"cid \d+\), fetched only once the host rings the doorbell", dead["message"]), dead["message"]
    spdk = by["test_spdk_app_waits_for_an_aer_that_never_comes"]
    assert spdk["outcome"] == "timed out" and spdk["duration"] <= 60 * {"kvm": 1, "tcg": 3}[res["accel"]] + 5
    assert ("no Error AER for test_write_invalid_db within 10 s, interrupted; QEMU saw pci_nvme_ub_db_wr_invalid_sq"
            in spdk["message"] and "but no Asynchronous Event Request was outstanding" in spdk["message"])
    assert "test_write_invalid_db (doorbell of a non-existent SQ (qid 2): Error AER info 0x0): Failure" in spdk["message"]
    assert "exit status" not in spdk["message"]  # interrupted, SPDK's app prints Failure and still exits 0
    assert spdk["error"] == {"kind": "DeadlineError", "what": "doorbell_aers test_write_invalid_db", "seconds": 10}


@pytest.mark.vm
def test_a_machine_left_broken_is_not_handed_on(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", str(TAINT), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-2000:]
    by = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    assert by["test_breaks_its_machine"]["outcome"] == "infrastructure error"
    assert "could not restore the machine" in by["test_breaks_its_machine"]["message"]
    assert by["test_next_gets_a_machine_in_order"]["outcome"] == "passed"
    crashed = by["test_qemu_dies_of_sigsegv"]
    assert crashed["outcome"] == "qemu crashed" and crashed["duration"] < 30, crashed
    # titled by the first frame of QEMU's own code in the thread the signal hit (its core, via gdb)
    assert re.match(r"qemu crashed: QEMU SIGSEGV (in \w+|at qemu-system-x86_64\+0x[0-9a-f]+( under \w+)?)$",
                    crashed["message"].splitlines()[0]), crashed["message"]
    assert list(crashed["discarded"].values()) == ["QEMU died"]
    bt = Path(crashed["artifacts"]).parent / "vm-2" / "qemu-core.bt.txt"  # the module's second machine
    assert "Program terminated with signal SIGSEGV" in bt.read_text()
    assert by["test_after_the_qemu_crash_a_machine_in_order"]["outcome"] == "passed"
    lost = by["test_guest_ignores_the_unplug"]
    assert lost["outcome"] == "failed" and list(lost["discarded"].values()) == [
        "half-unplugged: device_del nvme0: no DEVICE_DELETED within 3 s: QEMU raised the removal request "
        "(ACPI GPE), and the guest never read it: the guest's ACPI hotplug handler did not run"]
    assert by["test_after_the_lost_unplug_a_machine_in_order"]["outcome"] == "passed"
    assert "qemu crashed" in r.stdout and "QEMU SIGSEGV" in r.stdout  # the summary names it


@pytest.mark.vm
def test_crashes_are_found_and_titled(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", str(CRASHES), "--junit", str(tmp_path / "j.xml"), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "r.json").read_text())
    by = {t["nodeid"].rsplit("::", 1)[1]: t for t in res["tests"]}
    asserted = by["test_app_asserts"]
    assert asserted["outcome"] == "guest crashed"
    assert asserted["message"] == "guest crashed: Assertion `qpair->poll_group' failed in nvme_rdma_qpair_destroy"
    assert any(e["kind"] == "app" and "Assertion `qpair->poll_group' failed" in e["what"] for e in asserted["events"])
    bt = list(Path(asserted["artifacts"]).glob("core-python3*.bt.txt"))
    assert bt and "__assert_fail" in bt[0].read_text()  # gdb's backtrace of the core the app left
    warned = by["test_kernel_warning"]
    assert (warned["outcome"], warned["message"]) == ("guest crashed", "guest crashed: WARNING in nvme_remove_namespaces")
    hung = by["test_task_hangs"]
    # the test ends at the report; the blocked task's stack (sysrq w) names where it waits
    assert hung["outcome"] == "guest crashed" and hung["message"].startswith("guest crashed: INFO: task hung in "), hung
    assert hung["duration"] < 60  # not its deadline (300 s under TCG)
    (stacks,) = Path(hung["artifacts"]).glob("sysrq-*.txt")
    assert "Show Blocked State" in stacks.read_text() and "task:touch" in stacks.read_text()
    (cpus,) = Path(hung["artifacts"]).glob("cpus-*.txt")  # each vCPU as QEMU held it at the report
    assert "CPU#1" in cpus.read_text() and "dumping local APIC state for CPU 1" in cpus.read_text()
    assert "discarded" in hung
    panic = by["test_sysrq_panic"]
    assert panic["outcome"] == "guest crashed"
    # its timeline: the panic reached the console, then QEMU reported GUEST_PANICKED; its excerpt starts there
    kinds = [(e["kind"], e["what"].split(": ", 1)[-1]) for e in panic["events"] if e["kind"] in ("crash", "qemu")]
    assert kinds.index(("crash", "Kernel panic - not syncing: sysrq triggered crash")) < \
        kinds.index(("qemu", "GUEST_PANICKED run")), kinds
    # the guest was not paused at pvpanic: the kernel flushed its console to the end of its panic
    assert "---[ end Kernel panic - not syncing: sysrq triggered crash ]---" in (
        Path(panic["artifacts"]) / "console.log").read_text()
    assert "Kernel panic - not syncing: sysrq triggered crash" in panic["excerpt"].splitlines()[1]
    assert panic["message"].startswith("guest crashed: kernel panic: sysrq triggered crash; "
                                       "guest panicked (pvpanic GUEST_PANICKED)")
    assert panic["duration"] < 30  # ended by the console watch, not by its deadline (300 s under TCG)
    quiet = by["test_guest_stops_answering"]  # the guest's silence, not the wait that ran into it
    assert (quiet["outcome"], quiet["message"].splitlines()[0]) == (
        "guest crashed", "guest crashed: guest unresponsive (no SSH answer while QEMU runs it)"), quiet
    assert "discarded" in quiet
    assert by["test_the_next_test_gets_a_live_machine"]["outcome"] == "passed"
    cases = junit_cases(tmp_path / "j.xml")
    assert prop(cases["test_sysrq_panic"], "outcome") == "guest crashed"
    assert cases["test_kernel_warning"].find("failure") is not None


@pytest.mark.vm
def test_sw_hotplug_kernel_passes_with_junit_and_html(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", "sw_hotplug", "-k", "kernel", "--junit", str(tmp_path / "j.xml"),
              "--json", "r.json", "--html", "r.html")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    tests = json.loads((tmp_path / "r.json").read_text())["tests"]
    first = tests[0]["events"]  # the module's machine booted in its set-up, then each remove lost its device
    assert [e["kind"] for e in first[:2]] == ["phase", "boot"] and first[1]["end"] <= first[0]["end"]
    for i, e in enumerate(first):
        if e["kind"] == "fault" and e["what"].startswith("remove "):
            after = [x["what"].split(": ")[-1] for x in first[i + 1:] if x["kind"] in ("qemu", "fault")]
            assert after[0] == f"DEVICE_DELETED {e['what'].split()[1]}", first
    dom = browser(tmp_path / "r.html", tmp_path, "--dump-dom")
    assert dom.count('<tr class="test"') == len(tests) == 3 and dom.count("<svg") == 3
    browser(tmp_path / "r.html", tmp_path, f"--screenshot={tmp_path / 'r.png'}", "--window-size=1200,900")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # for a person to look at
    assert "tbctl summary" in r.stdout and "artifacts:" in r.stdout
    cases = junit_cases(tmp_path / "j.xml")
    assert set(cases) == {"test_orderly_hotplug[kernel]", "test_surprise_removal[kernel]",
                          "test_hotplug_under_io[kernel]"}
    assert all(prop(c, "outcome") == "passed" and c.find("failure") is None for c in cases.values())
    logs = list((tmp_path / "art").glob("run-*/sw_hotplug/test_orderly_hotplug_kernel_/app-kernel.log"))
    events = [json.loads(line) for line in logs[0].read_text().splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("remove") == 8 and [e["event"] for e in events].count("insert") == 8


@pytest.mark.vm
def test_qemus_death_is_qemus_whatever_call_noticed_it(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", str(QEMU_DIES), "--json", str(tmp_path / "r.json"), timeout=1200)
    by = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    assert set(by) == {"test_qmp_command", "test_qmp_event_wait", "test_qtest_command", "test_console_wait",
                       "test_setup", "test_teardown"}, r.stdout[-3000:]
    for name, t in by.items():
        assert t["outcome"] == "qemu crashed", (name, t)
        assert re.match(r"qemu crashed: QEMU (SIGSEGV|died of SIGSEGV)", t["message"]), (name, t["message"])
        assert list(t["discarded"].values()) == ["QEMU died"], (name, t)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.vm
def test_no_tests_selected_is_incomplete(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", "sw_hotplug", "-k", "no_such_test")
    assert r.returncode == 2


@pytest.mark.vm
def test_spdk_path_with_the_stand_in_app(tmp_path: Path, standin: Path) -> None:
    """The SPDK variants end to end: virtfs share, hugepages, uio binding, the tree's own
    libraries found, SPDK's output parsed; doorbell_aers's stand-in drives the controller from
    userspace as SPDK's driver does."""
    r = tbctl(tmp_path, "run", "sw_hotplug", "nvme_doorbell_aers", "-k", "spdk", "--spdk-dir", str(standin),
              "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    res = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    assert {k: t["outcome"] for k, t in res.items()} == {
        "test_orderly_hotplug[spdk]": "passed", "test_surprise_removal[spdk]": "passed",
        "test_orderly_hotplug[spdk_uio]": "passed", "test_surprise_removal[spdk_uio]": "passed",
        "test_spdk_doorbell_aers": "passed"}
    # SPDK's CI way by default (vfio-pci behind a vIOMMU), uio_pci_generic under its own name; a
    # QEMU that unplugged under a userspace driver is handed to no next test, so each test boots one
    hotplug = {k: t for k, t in res.items() if k != "test_spdk_doorbell_aers"}
    for k, t in hotplug.items():
        assert list(t["discarded"].values()) == ["its QEMU unplugged controllers under a userspace driver"], (k, t)
    assert len({m for t in hotplug.values() for m in t["discarded"]}) == 4
    argv = {p.parent.name: p.read_text() for p in (Path(res["test_spdk_doorbell_aers"]["artifacts"]).parents[1]
                                                   / "sw_hotplug").glob("vm-*/qemu.argv")}
    assert sorted("intel-iommu" in a for a in argv.values()) == [False, False, True, True], argv
    log = (Path(res["test_spdk_doorbell_aers"]["artifacts"]) / "doorbell_aers.log").read_text()
    assert log.count("Asynchronous Event received.") == 3 and log.count("Success: ") == 3


@pytest.mark.vm
def test_sigterm_mid_run_cleans_up_and_still_writes_results(tmp_path: Path) -> None:
    from orchestrator.vm import registry

    env = dict(os.environ, TBCTL_ARTIFACTS=str(tmp_path / "art"))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "sw_hotplug", "-k", "kernel",
                             "--json", str(tmp_path / "r.json")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(r.qemu_alive() for r in registry.records()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never started a VM"
            time.sleep(0.2)
        time.sleep(3)
        proc.terminate()
        assert proc.wait(30) == 2
    finally:
        proc.kill()
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["exit_code"] == 2
    assert registry.records() == []


@pytest.mark.vm
def test_nvme_doorbell_aers_passes(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", "nvme_doorbell_aers", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["counts"]["passed"] == 11 and res["exit_code"] == 0


@pytest.mark.vm
def test_no_doorbell_case_runs_past_its_deadline(tmp_path: Path) -> None:
    """With a 3 s deadline each case ends within 3 + 5 s, killed or not. The bus-master cases wait
    ADMIN_WAIT (10 s) for a command that cannot complete, inside their own
    `pytest.raises(DeadlineError)`: on any QEMU, at any speed, the test's deadline ends them.
    One doorbell case beside them (each case that times out costs a boot: 150 s for all in CI)."""
    r = tbctl(tmp_path, "run", "nvme_doorbell_aers", "-k", "test_bus_master_clear or sq-tail-too-big-host", "--timeout", "3",
              "--json", str(tmp_path / "r.json"))
    assert r.returncode in (1, 2), r.stdout[-3000:]
    res = json.loads((tmp_path / "r.json").read_text())
    bus_master = [t for t in res["tests"] if "test_bus_master_clear_makes_controller_fatal" in t["nodeid"]]
    assert len(bus_master) == 2 and all(t["outcome"] == "timed out" for t in bus_master), bus_master
    assert len(res["tests"]) == 3, [t["nodeid"] for t in res["tests"]]
    for t in res["tests"]:
        if t["outcome"] in ("passed", "failed", "timed out"):
            assert t["duration"] <= 3 + 5, t


@pytest.mark.vm
def test_dm_mount_passes_and_its_race_is_deterministic(tmp_path: Path) -> None:
    """dm_mount end to end; its race test reproduces the CI failure without the sync and passes
    with it, in each of its runs (the test's own loop)."""
    r = tbctl(tmp_path, "run", "dm_mount", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    res = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    assert {k: t["outcome"] for k, t in res.items()} == {"test_dm_mount": "passed", "test_race_mode": "passed"}
    log = (Path(res["test_race_mode"]["artifacts"]) / "commands.log").read_text()
    assert log.count("device-mapper: reload ioctl on nvme_dm_test (253:0) failed: No such device") == 3  # RACE_RUNS


@pytest.mark.vm
def test_a_retried_test_gets_a_fresh_machine_and_keeps_each_attempt(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", str(CRASHES), "-k", "sysrq_panic", "--retries", "1", "--json", "r.json")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    (test,) = json.loads((tmp_path / "r.json").read_text())["tests"]
    (first,) = test["attempts"]
    assert first["outcome"] == test["outcome"] == "guest crashed"
    assert first["signature"].startswith("guest crashed: kernel panic: sysrq triggered crash")
    assert test["artifacts"] == first["artifacts"] + "-attempt-2"
    (crashed,) = first["discarded"]  # the first attempt's machine is not handed to the second
    booted = [e["what"].split()[0] for e in test["events"] if e["kind"] == "boot"]
    assert len(booted) == 1 and booted[0] != crashed


@pytest.mark.vm
def test_keep_vm_keeps_exactly_the_failing_tests_machine(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", str(KEEP), "--keep-vm", "--json", "r.json")
    try:
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        tests = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
        assert [t["outcome"] for t in tests.values()] == ["passed", "failed", "passed"]
        (kept,) = tests["test_fails_leaving_a_clue"]["kept"]
        assert f"get in: tbctl ssh {kept}   drop: tbctl down {kept}" in r.stdout
        up = json.loads(tbctl(tmp_path, "status", "--json").stdout)
        assert [v["name"] for v in up] == [kept]  # the passing module's last machine was shut down
        assert tbctl(tmp_path, "ssh", kept, "--", "cat /root/clue").stdout == "the clue\n"
    finally:
        tbctl(tmp_path, "down", "--all")
    assert json.loads(tbctl(tmp_path, "status", "--json").stdout) == []
