"""The fault table: every kind from one row, the same arguments on `tbctl inject` and in a marker
fault (`--fault 'KIND [ARGS] after MARKER [+S]'`), a mistake one line naming where; a marker
fault fires once, at its line, after its delay, and says when it did not."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.config import topology
from orchestrator.errors import ConfigError, MachineError
from orchestrator.faults import marker, table
from orchestrator.faults.kind import Kind, Param, Timing
from orchestrator.faults.timing import Timed


def test_every_kind_is_in_the_table_once_with_what_it_does() -> None:
    assert {"remove", "add", "surprise-remove", "rescan", "doorbell", "bus-master", "nic-remove", "nic-add",
            "link-down", "link-up", "app-signal", "vm-pause", "vm-resume", "smart-warning", "media-error",
            "media-clear", "pcie-aer", "reset", "io-stall"} <= set(table.KINDS)
    for k in table.KINDS.values():
        assert k.help and k.usage().startswith(k.name)
        assert f"{k.usage()}\n    {k.help}" in table.listing()


def test_a_kinds_arguments_parse_as_on_the_command_line() -> None:
    doorbell = table.KINDS["doorbell"]
    assert doorbell.parse(["nvme0", "sq-tail-too-big"], "here") == {"ctrl": "nvme0", "kind": "sq-tail-too-big",
                                                                    "via": "host"}
    assert doorbell.parse(["nvme1", "cq-head-too-big", "--via", "guest"], "here")["via"] == "guest"
    assert table.KINDS["rescan"].parse([], "here") == {}
    with pytest.raises(ConfigError, match=r"^here: doorbell: argument kind: invalid choice: 'x' .*; usage: doorbell "
                                          r"CTRL sq-nonexistent\|cq-nonexistent\|sq-tail-too-big\|cq-head-too-big "
                                          r"\[--via host\|guest\]$"):
        doorbell.parse(["nvme0", "x"], "here")
    with pytest.raises(ConfigError, match="^here: remove: the following arguments are required: ctrl"):
        table.KINDS["remove"].parse([], "here")
    with pytest.raises(ConfigError, match="^here: rescan: unrecognized arguments: nvme0"):
        table.KINDS["rescan"].parse(["nvme0"], "here")


def test_a_media_errors_range_is_checked_before_it_fires() -> None:
    """The LBA range, the namespace and the choices, as argparse checks them: a required option,
    values spelled one way; too many blocks (one blkdebug rule each) is refused."""
    media = table.KINDS["media-error"]
    assert media.usage() == "media-error CTRL --lba LBA [--ns NS] [--op read|write|any] [--times always|once]"
    assert media.parse(["nvme0", "--lba", "8-15"], "here") == {"ctrl": "nvme0", "lba": "8-15", "ns": "1",
                                                                "op": "read", "times": "always"}
    assert media.parse(["nvme1", "--lba", "007", "--ns", "2", "--op", "any", "--times", "once"], "here") == {
        "ctrl": "nvme1", "lba": "7-7", "ns": "2", "op": "any", "times": "once"}
    for words, says in ((["nvme0"], "the following arguments are required: --lba"),
                        (["nvme0", "--lba", "9-8"], "argument --lba: '9-8': must be LBA or FIRST-LAST (e.g. 0-7)"),
                        (["nvme0", "--lba", "-3"], "argument --lba: '-3': must be LBA or FIRST-LAST (e.g. 0-7)"),
                        (["nvme0", "--lba", "0-1024"], "argument --lba: '0-1024': at most 1024 blocks"),
                        (["nvme0", "--lba", "1", "--ns", "0"], "argument --ns: '0': must be a namespace id, 1 or more")):
        with pytest.raises(ConfigError) as e:
            media.parse(words, "here")
        assert str(e.value).startswith(f"here: media-error: {says}; usage: media-error CTRL --lba LBA"), str(e.value)
    assert media.parse(["nvme0", "--lba", "0-1023"], "here")["lba"] == "0-1023"


@pytest.mark.parametrize("spec,want", [
    ('remove nvme0 after "START TEST nvme_reset" +2s', ("remove", {"ctrl": "nvme0"}, "START TEST nvme_reset", 2.0)),
    ("app-signal nvmf_tgt KILL after perf_started +0.5", ("app-signal", {"program": "nvmf_tgt", "signal": "KILL"},
                                                          "perf_started", 0.5)),
    ("nic-remove fabric0 --via guest after 'waiting for I/O'", ("nic-remove", {"nic": "fabric0", "via": "guest"},
                                                                "waiting for I/O", 0.0)),
])
def test_a_marker_fault_is_a_kind_its_arguments_a_marker_and_a_delay(spec: str, want: tuple[Any, ...]) -> None:
    f = marker.parse(spec)
    assert (f.kind.name, dict(f.args), f.marker, f.delay) == want


@pytest.mark.parametrize("spec,says", [
    ("remove nvme0", "must be KIND [ARGS] after MARKER"),
    ("after x", "must be KIND [ARGS] after MARKER"),
    ("remove nvme0 after", "after what?"),
    ("remove nvme0 after x +2m", "delay '+2m': must be +SECONDS"),
    ("remove nvme0 after x +5000", "at most 3600"),
    ("remove nvme0 after x +1 y", "after what?"),
    ("unplug nvme0 after x", "no fault 'unplug'; faults: remove, add"),
    ("doorbell nvme0 wrong after x", "doorbell: argument kind: invalid choice"),
    ("remove nvme0 after 'x", "No closing quotation"),
])
def test_a_bad_marker_fault_is_one_line(spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        marker.parse(spec)
    assert str(e.value).startswith(f"--fault {spec!r}: ") and says in str(e.value) and "\n" not in str(e.value)


def test_a_marker_fault_without_a_script_is_refused_before_anything_boots(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "sw_hotplug", "--fault", "remove nvme0 after x"]) == 2
    assert "--fault: a marker fault fires at a line an SPDK script prints" in capsys.readouterr().err
    assert cli.main(["run", "sw_hotplug", "--fault", "remove nvme0"]) == 2
    assert "--fault 'remove nvme0': must be KIND [ARGS] after MARKER" in capsys.readouterr().err


class _Target:
    name = "t"


def _kind(calls: list[tuple[str, float]], fail: bool = False) -> Kind:
    def fire(m: Any, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
        if fail:
            raise MachineError("controller nvme9 is not on the PCI bus")
        timed = t.timed()
        timed.delay(f"poke {a['what']}")
        calls.append((a["what"], time.monotonic()))
        return f"poked {a['what']}", timed
    return Kind("poke", "a test's own fault", (Param("what", "what to poke"),), fire)


def test_a_marker_fault_fires_once_at_its_line_after_its_delay() -> None:
    calls: list[tuple[str, float]] = []
    k = _kind(calls)
    faults = [marker.MarkerFault("poke a after GO", k, (("what", "a"),), "GO", 0.0),
              marker.MarkerFault("poke b after 'STEP 2' +0.3s", k, (("what", "b"),), "STEP 2", 0.3)]
    watch = marker.Watch(faults, _Target(), Timing())  # type: ignore[arg-type]
    watch.line("starting")
    assert calls == []
    watch.line("ready, GO now")
    watch.line("GO again")  # once only
    seen = time.monotonic()
    watch.line("== STEP 2 ==")
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:  # the script still runs while b waits its delay
        time.sleep(0.05)
    assert watch.finish(5) == []
    assert sorted(w for w, _ in calls) == ["a", "b"]
    assert dict(calls)["b"] - seen >= 0.3
    assert sorted(watch.said) == sorted(["fault 'poke a after GO': poked a",
                                         "fault \"poke b after 'STEP 2' +0.3s\": poked b"])
    assert sorted(s for t in watch.fired for s, _ in t.schedule) == ["poke a", "poke b"]


def test_a_marker_fault_that_failed_or_never_came_says_so() -> None:
    calls: list[tuple[str, float]] = []
    faults = [marker.MarkerFault("poke x after GO", _kind(calls, fail=True), (("what", "x"),), "GO", 0.0),
              marker.MarkerFault("poke y after NEVER", _kind(calls), (("what", "y"),), "NEVER", 0.0),
              marker.MarkerFault("poke z after LATE +30", _kind(calls), (("what", "z"),), "LATE", 30.0)]
    watch = marker.Watch(faults, _Target(), Timing())  # type: ignore[arg-type]
    before = time.time()
    watch.line("GO")
    watch.line("LATE")
    t0 = time.monotonic()
    problems = watch.finish(5)
    # the timeline shows where the failed one was fired (beside the step it was meant for)
    assert [what for _, what in watch.failed] == ["poke x after GO (failed)"] and watch.failed[0][0] >= before
    assert time.monotonic() - t0 < 5  # the script ended: a fault in its delay is dropped at once
    assert sorted(problems) == [
        "fault 'poke x after GO' failed: controller nvme9 is not on the PCI bus",
        "fault 'poke y after NEVER' never fired: no line of the output contained 'NEVER'",
        "fault 'poke z after LATE +30' never fired: the script ended within its +30 s"]
    assert calls == [] and watch.fired == [] and not any(t.is_alive() for t in threading.enumerate()
                                                         if t.name.startswith("fault "))


def test_tbctl_list_faults_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "--faults"]) == 0
    assert capsys.readouterr().out == table.listing() + "\n"


def test_a_namespace_of_no_subsystem_or_past_the_last_is_refused_before_anything_is_sent() -> None:
    """QEMU attaches and detaches only a subsystem's namespaces (nvme_subsys_ns): on the default
    topology's controllers the fault is one line, before the guest is asked anything."""
    class NoGuest:
        topology = topology.default()

        @property
        def ssh(self) -> Any:
            raise AssertionError("the guest was asked")

    for kind in ("ns-detach", "ns-attach"):
        with pytest.raises(ConfigError, match=f"^{kind} nvme0: the controller is in no NVMe subsystem"):
            table.KINDS[kind].fire(NoGuest(), table.KINDS[kind].parse(["nvme0"], "here"), Timing())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^nvme0: no namespace 2 \\(it has 1\\)"):
        table.KINDS["ns-detach"].fire(NoGuest(), {"ctrl": "nvme0", "ns": "2"}, Timing())  # type: ignore[arg-type]
