"""Which QEMU runs: the choice and its precedence, what is probed from the binary, a private prefix,
and a topology refused for a property the chosen binary lacks. Runs the host's own QEMU (no VM)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.config import topology
from orchestrator.errors import ConfigError
from orchestrator.vm import qemu_binary

HOST = Path(shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64").resolve()


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TBCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(qemu_binary.ENV, raising=False)
    return tmp_path / "cache"


def test_precedence_flag_env_topology_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert qemu_binary.select().chosen_by == "PATH"
    assert qemu_binary.select(None, str(HOST), "t.toml").chosen_by == "topology"
    monkeypatch.setenv(qemu_binary.ENV, str(HOST))
    assert qemu_binary.select(None, "/nonexistent", "t.toml").chosen_by == qemu_binary.ENV
    q = qemu_binary.select(str(HOST), "/nonexistent", "t.toml")
    assert q.chosen_by == "--qemu" and q.path == HOST


def test_a_bad_choice_is_one_line_naming_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^--qemu: '/no/qemu': no such executable; give the path"):
        qemu_binary.select("/no/qemu")
    with pytest.raises(ConfigError, match=r"^t\.toml: qemu: 'no-such-qemu': not found on PATH"):
        qemu_binary.select(None, "no-such-qemu", "t.toml")
    monkeypatch.setenv(qemu_binary.ENV, "/no/qemu")
    with pytest.raises(ConfigError, match=r"^TBCTL_QEMU: '/no/qemu'"):
        qemu_binary.select()


def test_facts_come_from_the_binary_and_are_cached(own_cache: Path) -> None:
    q = qemu_binary.probe(HOST)
    assert q.version_line.startswith(f"QEMU emulator version {q.version_text}")
    assert {"serial", "max_ioqpairs", "cmb_size_mb"} <= q.nvme_properties and "user" in q.netdevs
    assert q.firmware("qboot.rom") is not None and q.origin == "host"
    (cache,) = own_cache.glob("qemu-probe-*.json")
    facts = json.loads(cache.read_text())
    facts["nvme_properties"].append("from-the-cache")
    cache.write_text(json.dumps(facts))
    assert "from-the-cache" in qemu_binary.probe(HOST).nvme_properties  # not asked again


def test_a_private_prefix_runs_with_its_own_modules_and_firmware_first(own_cache: Path) -> None:
    prefix = qemu_binary.prefixes() / "mine"
    (prefix / "root/usr/bin").mkdir(parents=True)
    (prefix / "root/usr/share/qemu").mkdir(parents=True)
    shutil.copy2(HOST, prefix / "root/usr/bin/qemu-system-x86_64")
    (prefix / "root/usr/share/qemu/qboot.rom").write_bytes(b"not the host's")
    (prefix / qemu_binary.MANIFEST).write_text(json.dumps({
        "origin": "a test prefix", "binary": "root/usr/bin/qemu-system-x86_64",
        "env": {"QEMU_MODULE_DIR": "root/usr/lib/x86_64-linux-gnu/qemu"}, "datadirs": ["root/usr/share/qemu"]}))
    q = qemu_binary.select("mine")  # by the name it was installed under
    own = str(prefix / "root/usr/share/qemu")
    assert q.path == prefix / "root/usr/bin/qemu-system-x86_64" and q.origin == "a test prefix"
    assert q.argv() == [str(q.path), "-L", own] and q.datadirs[0] == own
    assert q.firmware("qboot.rom") == prefix / "root/usr/share/qemu/qboot.rom"
    assert q.environ()["QEMU_MODULE_DIR"] == str(prefix / "root/usr/lib/x86_64-linux-gnu/qemu")


def test_a_topology_is_checked_against_the_chosen_binary() -> None:
    q = qemu_binary.probe(HOST)
    topo = topology.parse({"nvme": [{"id": "nvme0"}, {"id": "nvme1", "shadow_doorbells": False}]}, "t.toml")
    assert topo.controller("nvme1").device()["dbcs"] is False
    if "dbcs" in q.nvme_properties:
        topology.check_qemu(topo, q)
        return
    with pytest.raises(ConfigError) as e:
        topology.check_qemu(topo, q)
    assert str(e.value) == (f"t.toml: nvme[1].shadow_doorbells: QEMU {q.version_text} ({HOST}) has no nvme "
                            "property 'dbcs'; QEMU 10.0 has it")
    topology.check_qemu(topology.default(), q)


def test_multipath_is_off_unless_asked() -> None:
    assert "nvme_core.multipath=N" in topology.default().kernel_args().split()
    on = topology.parse({"machine": {"multipath": True}}, "t.toml")
    assert "multipath" not in on.kernel_args()
    with pytest.raises(ConfigError, match=r"^t\.toml: machine\.multipath: must be true or false"):
        topology.parse({"machine": {"multipath": "yes"}}, "t.toml")


def test_a_source_without_qemu_is_told_apart_by_apt_gets_words_not_by_tbctls(
        own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`apt-get download` failing because the suite has no such package is NoSuchQemu (bad input:
    that release has none yet); any other failure of it stays a broken host command, with its parts."""
    from orchestrator.errors import HostCommandFailed
    from orchestrator.vm import qemu_install

    said = {"download": "E: Unable to locate package qemu-system-x86"}

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        verb = cmd[-len(qemu_install.PACKAGES) - 1] if "download" in cmd else cmd[-1]
        return subprocess.CompletedProcess(cmd, 100 if verb in said else 0, "", said.get(verb, ""))

    monkeypatch.setattr(qemu_install.apt, "host_codename", lambda: "bookworm")
    monkeypatch.setattr(qemu_install.subprocess, "run", fake_run)
    with pytest.raises(qemu_install.NoSuchQemu, match="carries no qemu-system-x86"):
        qemu_install.install("backports", mirror="http://mirror.invalid/debian", log=lambda _: None)
    said["download"] = "E: Failed to fetch http://mirror.invalid/debian/pool/q.deb  503  Service Unavailable"
    with pytest.raises(HostCommandFailed) as e:
        qemu_install.install("backports", mirror="http://mirror.invalid/debian", log=lambda _: None)
    assert (e.value.rc, e.value.cmd[-len(qemu_install.PACKAGES) - 1]) == (100, "download")
    assert "503" in e.value.output and not isinstance(e.value, ConfigError)


def test_a_guest_is_not_restored_on_a_qemu_whose_restored_tcg_guests_lose_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU 10's restored TCG guests lost an idle vCPU's timer interrupts on a busy host: machines
    on it boot cold, and the reason says what was seen; QEMU 7.2 and KVM still restore."""
    from orchestrator.machines import snapshot

    def qemu(version: tuple[int, int], text: str) -> object:
        return type("Q", (), {"at_least": lambda self, *v: version >= v, "version_text": text})()

    monkeypatch.setattr(qemu_binary, "current", lambda: qemu((7, 2), "7.2.22"))
    assert snapshot.unsupported(topology.default(), "tcg") is None
    monkeypatch.setattr(qemu_binary, "current", lambda: qemu((10, 0), "10.0.2"))
    reason = snapshot.unsupported(topology.default(), "tcg")
    assert reason is not None and reason.startswith("QEMU 10.0.2 under TCG: a restored guest lost an idle vCPU's timer")
    assert snapshot.unsupported(topology.default(), "kvm") is None
