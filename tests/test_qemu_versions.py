"""The suites on a second QEMU: Debian's backports (10.0 on a bookworm host) beside the host's
own, installed by tbctl itself into a private prefix. A test that passes on one QEMU and fails
on the other shows here as this test failing, with the suite's own summary line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import tbctl

from orchestrator import guest, image
from orchestrator.config import topology
from orchestrator.machines import Machine
from orchestrator.vm import qemu_binary

pytestmark = pytest.mark.vm


def test_every_suite_passes_on_the_other_qemu(backports: qemu_binary.Qemu, tmp_path: Path, standin: Path) -> None:
    # (the device fault suites run on it in tests/test_fault_suites.py)
    r = tbctl(tmp_path, "run", "sw_hotplug", "nvme_doorbell_aers", "dm_mount", "--qemu", "backports",
              "--spdk-dir", str(standin), "--json", str(tmp_path / "r.json"))
    res = json.loads((tmp_path / "r.json").read_text())
    failed = [f"{t['outcome']}: {t['nodeid']}\n{(t.get('message') or '')[:2000]}"
              for t in res["tests"] if t["outcome"] not in ("passed", "skipped")]
    assert r.returncode == 0, "\n".join(failed) + r.stdout[-2000:]  # each failure's whole message first
    assert res["qemu"]["path"] == str(backports.path) and res["qemu"]["version"] == backports.version_text
    assert res["qemu"]["origin"].startswith("Debian ") and "-backports" in res["qemu"]["origin"]
    outcomes = [t["outcome"] for t in res["tests"]]
    # or QEMU 10.0's own bug, on the project's list for that QEMU: still found, and said which
    known = [t["known"] for t in res["tests"] if t["outcome"] == "known failure"]
    assert all(k.get("qemu") == "10.0.*" for k in known), known
    assert set(outcomes) <= {"passed", "skipped", "known failure"} and outcomes.count("passed") >= 15, outcomes
    assert all(t["message"] for t in res["tests"] if t["outcome"] == "skipped")  # each skip says why
    assert f"QEMU {backports.version_text} ({backports.path}" in r.stdout  # the summary says which QEMU


def test_shadow_doorbells_off_where_the_qemu_has_the_property(backports: qemu_binary.Qemu, tmp_path: Path) -> None:
    if "dbcs" not in backports.nvme_properties:
        pytest.skip(f"QEMU {backports.version_text} has no nvme property dbcs")
    topo = topology.parse({"nvme": [{"id": "nvme0", "serial": "ON"}, {"id": "nvme1", "serial": "OFF",
                                                                      "shadow_doorbells": False}]}, "dbcs")
    with Machine(topo, image.ensure(), tmp_path / "art", accel="tcg", qemu=backports) as m:
        state = guest.nvme_state(m.ssh)
        oacs = {s: json.loads(m.ssh.run(f"nvme id-ctrl /dev/{state[s]['name']} -o json", timeout=30,
                                        check=True).stdout)["oacs"] for s in ("ON", "OFF")}
    # OACS bit 8: Doorbell Buffer Config, the shadow doorbells SPDK's hang involves
    assert oacs["ON"] & 0x100 and not oacs["OFF"] & 0x100, oacs
    assert "nvme_core.multipath=N" in (tmp_path / "art" / "qemu.argv").read_text()


@pytest.mark.parametrize("multipath", [False, True])
def test_native_multipath_only_when_the_topology_asks(backports: qemu_binary.Qemu, tmp_path: Path,
                                                       multipath: bool) -> None:
    """QEMU 10.0 puts every controller in a subsystem: the guest shows its hidden path devices
    (nvmeXcYnZ) only with `multipath = true`; by default it looks as under 7.2."""
    topo = topology.parse({"machine": {"multipath": multipath}, "nvme": [{"id": "nvme0"}]}, "mp")
    with Machine(topo, image.ensure(), tmp_path / "art", accel="tcg", qemu=backports) as m:
        paths = m.ssh.run("ls /sys/block", timeout=20, check=True).stdout.split()
        cmic = json.loads(m.ssh.run("nvme id-ctrl /dev/nvme0 -o json", timeout=30, check=True).stdout)["cmic"]
    assert cmic & 0x2  # 10.0: a controller of a (multi-controller) subsystem
    assert any(re.fullmatch(r"nvme\d+c\d+n\d+", p) for p in paths) == multipath, paths
