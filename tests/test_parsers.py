"""Every parser of guest output, fed empty and cut-short output: each says what it expected and
what it got (how the program ended, its last lines), never a Python exception from the parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import LoadFailed, MachineError
from orchestrator.faults.traces import NvmeTrace
from orchestrator.guest import load, nvme
from orchestrator.guest.hotplug_app import KernelHotplugApp
from orchestrator.guest.ssh import Result
from orchestrator.spdk.hotplug_app import SpdkHotplugApp
from orchestrator.spdk.tree import Tree

FIO = json.dumps({"fio version": "fio-3.33", "jobs": [{"jobname": "stay", "error": 0, "read": {"io_bytes": 4096}}]})


def cuts(text: str) -> list[str]:
    """The output, empty, and cut at a few places (as a program killed mid-report leaves it)."""
    whole = text.rstrip("\n")
    return [""] + [whole[:n] for n in (1, len(whole) // 3, len(whole) // 2, len(whole) - 1)]


def test_fio_report_whole_and_with_notes_before_it() -> None:
    assert load.report(Result("fio", 0, FIO, "", 2.0), "fio on /dev/nvme0n1")["jobs"][0]["error"] == 0
    assert load.report(Result("fio", 0, "note: both iodepth >= 1 and synchronous\n" + FIO, "", 2.0), "f")["jobs"]


@pytest.mark.parametrize("out", cuts(FIO) + ['{"jobs": []}', "[]", '{"jobs": [1]}'])
def test_fio_without_a_whole_report_says_how_it_ended(out: str) -> None:
    res = Result("fio", 130, out, "fio: terminating on signal 2\n", 4.1)
    with pytest.raises(LoadFailed) as e:
        load.report(res, "fio on /dev/nvme0n1 (nvme1, staying)")
    assert str(e.value).startswith("fio on /dev/nvme0n1 (nvme1, staying) was killed by SIGINT (exit 130) after 4.1 s ")
    assert str(e.value).endswith("its last lines:\nfio: terminating on signal 2")
    assert (e.value.rc, e.value.seconds) == (130, 4.1)


def test_how_a_command_ended_in_words() -> None:
    words = {rc: Result("x", rc, "", "", 0.0).ended for rc in (0, 2, 137, 139, -1)}
    assert words == {0: "exited 0", 2: "exited 2", 137: "was killed by SIGKILL (exit 137)",
                     139: "was killed by SIGSEGV (exit 139)", -1: "was killed by a signal"}
    assert Result("x", 1, "out\n", "", 0.0).tail() == "out"
    assert Result("x", 1, "", "", 0.0).tail() == ""


SUMMARY = '{"event": "summary", "inserts": 3, "removals": 4}\n'


@pytest.mark.parametrize("out", cuts(SUMMARY) + ['{"event": "summary"}\n', '["summary"]\n'])
def test_kernel_hotplug_app_without_its_summary(out: str) -> None:
    app = KernelHotplugApp(None, Path("/dev/null"))  # type: ignore[arg-type]
    with pytest.raises(LoadFailed, match=r"^kernel hotplug app was killed by a signal after 3\.0 s without "
                                         r"printing its summary; its last lines:\n"):
        app.summary(Result("python3 -", -1, out, "", 3.0))
    for line in cuts('{"event": "remove", "serial": "S1", "t": 2}'):
        assert app.parse(line) is None and not app.is_ready(line)


SPDK = "Initialization complete. Starting I/O...\nController removed: QEMU NVMe Ctrl       (TBCTL0001           )\n" \
       "Expected removals 3 != actual removals 2\n"


@pytest.mark.parametrize("out", cuts(SPDK))
def test_spdk_hotplug_app_lines_cut_short(out: str) -> None:
    app = SpdkHotplugApp(None, Path("/dev/null"), Tree(Path("/nonexistent")), {})  # type: ignore[arg-type]
    for line in out.splitlines():
        app.is_ready(line)
        app.parse(line)
    s = app.summary(Result("hotplug", 1, out, "", 1.0))
    assert s.removals in (0, 1, 2) and s.inserts == 0


VERDICT = json.dumps({"ok": True, "waited": 0.2, "controllers": {}, "reprobed": []})


@pytest.mark.parametrize("out", cuts(VERDICT) + ['{"ok": true}', "[1]"])
def test_nvme_state_helper_without_its_verdict(out: str) -> None:
    with pytest.raises(MachineError, match=r"^guest nvme_state helper exited 1 without its verdict after 0\.5 s: "
                                           r"Traceback"):
        nvme._parse(Result("python3 -", 1, out, "Traceback (most recent call last):\n", 0.5))
    assert nvme._parse(Result("python3 -", 0, VERDICT + "\n", "", 0.5)).ok


@pytest.mark.parametrize("line", ['0000:01:00.0 {"serial": "S"', "0000:01:00.0", '0000:01:00.0 ["S"]'])
def test_bind_identities_cut_short(line: str) -> None:
    with pytest.raises(MachineError, match=r"^guest: /run/tbctl/nvme/0000:01:00.0.json is not the identity"):
        nvme.parse_identities(line)
    assert nvme.parse_identities('0000:01:00.0 {"serial": "S", "model": "M"}') == \
        {"0000:01:00.0": {"serial": "S", "model": "M"}}


def test_error_aers_from_a_trace_being_written(tmp_path: Path) -> None:
    log = tmp_path / "qemu.stderr"
    log.write_text("pci_nvme_aer_post_cqe type 0x0 info 0x0 log_page 0x1\n"
                   "pci_nvme_aer_post_cqe type 0x0 info 0x1 log_page 0x1\npci_nvme_aer_post_cqe type 0x0 in")

    class Machine:
        stderr_log = log

    trace = NvmeTrace(Machine())  # type: ignore[arg-type]
    assert trace.error_aers() == ["0x0", "0x1", "cut"]
    log.write_text("")
    assert trace.error_aers() == []
