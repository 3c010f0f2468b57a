"""Parsing what the hotplug apps print (SPDK's lines as its examples/nvme/hotplug prints them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import DeadlineError
from orchestrator.guest.hotplug_app import KernelHotplugApp, MissedEvent
from orchestrator.guest.ssh import Result
from orchestrator.spdk.hotplug_app import SpdkHotplugApp
from orchestrator.spdk.tree import Tree

SPDK_OUTPUT = """Initializing NVMe Controllers
Attaching to 0000:01:00.0
Attached to 0000:01:00.0
Initialization complete. Starting I/O...
QEMU NVMe Ctrl       (TBCTL0001           ):        120 I/Os completed (+120)
Controller removed: QEMU NVMe Ctrl       (TBCTL0001           )
[2026-12-03 18:26:17.452738] nvme_pcie_common.c: 790:nvme_pcie_qpair_abort_trackers: *ERROR*: [0000:01:00.0,cntlid:0,qid:1,qpair:0x2000005fbde0,DESTROYING] aborting outstanding command
Controller removed: QEMU NVMe Ctrl       (TBCTL0001           )
unregister_dev: QEMU NVMe Ctrl       (TBCTL0001           )
Attaching to 0000:01:00.0
Attached to 0000:01:00.0
Controller removed: QEMU NVMe Ctrl       (TBCTL0001           )
Expected removals 3 != actual removals 2
"""


def test_spdk_lines() -> None:
    app = SpdkHotplugApp(None, Path("/dev/null"), Tree(Path("/nonexistent")),  # type: ignore[arg-type]
                         {"0000:01:00.0": "TBCTL0001"})
    events, ready_at = [], None
    for i, line in enumerate(SPDK_OUTPUT.splitlines()):
        if ready_at is None and app.is_ready(line):
            ready_at = i
        if p := app.parse(line):
            events.append(p)
    assert ready_at == 3  # controllers attached at start-up are not insertions
    # the remove callback ran twice for the first removal (vfio-pci: SPDK v26.05 did so): one removal
    assert events == [("remove", "TBCTL0001"), ("insert", "TBCTL0001"), ("remove", "TBCTL0001")]
    app.events = []
    s = app.summary(Result("x", 1, SPDK_OUTPUT, "", 1.0))
    assert (s.rc, s.removals) == (1, 2)
    assert app.command(2, 2, 30)[0] == ("exec stdbuf -oL -eL /mnt/spdk/build/examples/hotplug "
                                        "-i 0 -t 30 -n 2 -r 2 2>&1")


def test_kernel_app_lines() -> None:
    app = KernelHotplugApp(None, Path("/dev/null"))  # type: ignore[arg-type]
    assert app.is_ready('{"event": "ready", "controllers": [], "t": 1.0}')
    assert app.parse('{"event": "remove", "serial": "S1", "name": "nvme0", "address": "0000:01:00.0", "t": 2}') \
        == ("remove", "S1")
    assert app.parse("Traceback (most recent call last):") is None
    s = app.summary(Result("x", 0, '{"event": "summary", "inserts": 3, "removals": 4}\n', "", 1.0))
    assert (s.inserts, s.removals) == (3, 4)


class _Printed:
    """An app process that printed `lines` and then nothing more."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def readline(self, timeout: float) -> str:
        if not self.lines:
            raise DeadlineError("no line")
        return self.lines.pop(0)


def test_a_missed_event_says_what_the_app_printed_since_its_last_report(tmp_path: Path) -> None:
    """Whether SPDK's app began to attach the controller and failed, or never looked, is in its
    own lines after its last event: the message carries them (on a line of their own, so that
    repro's signature, the first line, stays the same from run to run)."""
    app = SpdkHotplugApp(None, tmp_path / "app.log", Tree(Path("/nonexistent")),  # type: ignore[arg-type]
                         {"0000:01:00.0": "TBCTL0001"})
    app._proc = _Printed(SPDK_OUTPUT.splitlines()[:6] + ["Attaching to 0000:01:00.0",  # type: ignore[assignment]
                                                          "nvme_ctrlr.c: *ERROR*: could not read CSTS", ""])
    while not app.is_ready(app._line(1, "get ready")):
        pass
    assert app.expect("remove", "TBCTL0001", 1).serial == "TBCTL0001"
    with pytest.raises(MissedEvent) as e:
        app.expect("insert", "TBCTL0001", 0.01, " (nvme0, cycle 1/1)")
    assert str(e.value) == (
        "spdk app missed insert TBCTL0001 (nvme0, cycle 1/1): not reported within 0.01 s (it reported: "
        "remove TBCTL0001)\nsince its last report it printed: Attaching to 0000:01:00.0 | "
        "nvme_ctrlr.c: *ERROR*: could not read CSTS")
    assert "could not read CSTS" in (tmp_path / "app.log").read_text()
