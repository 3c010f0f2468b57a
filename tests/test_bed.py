"""Beds: several machines by role, joined by point-to-point networks on loopback. The file format
and its one-line errors; the QEMU command lines; two machines booted together and talking."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from orchestrator.config import bed as beds
from orchestrator.config import topology
from orchestrator.errors import ConfigError
from orchestrator.guest import net
from orchestrator.image import Image
from orchestrator.machines import Machine
from orchestrator.machines import bed as machine_beds
from orchestrator.net import links
from orchestrator.vm import qemu_binary

GOOD = """
[bed]
name = "nvmf"
[machines.target]
machine = { memory_mib = 1024 }
nvme = [{ id = "nvme0", serial = "TGT0001" }]
nic = [{ network = "fabric", address = "10.0.0.1/24" }]
[machines.host]
nic = [{ id = "eth_fabric", network = "fabric", address = "10.0.0.2/24", hotplug = false }]
[networks.fabric]
kind = "dgram"
"""


def test_a_bed_file() -> None:
    b = beds.parse(tomllib.loads(GOOD), "nvmf.toml")
    assert (b.name, list(b.machines), list(b.networks)) == ("nvmf", ["target", "host"], ["fabric"])
    target, host = b.machine("target"), b.machine("host")
    assert (target.name, host.name) == ("target", "host")  # named by role: MACs derive from it
    assert target.nics[0] == topology.Nic("nic_fabric", "fabric", "10.0.0.1/24", True)
    assert host.nics[0].id == "eth_fabric" and not host.nics[0].hotplug
    assert [r for r, _ in b.peers("fabric")] == ["target", "host"]
    assert target.nics[0].mac("target") == target.nics[0].mac("target") != target.nics[0].mac("host")
    with pytest.raises(ConfigError, match="has no machine 'client'; roles: target, host"):
        b.machine("client")


@pytest.mark.parametrize("edit, error", [
    (lambda d: d.pop("networks"), "machines.target.nic[0].network: 'fabric' is no network of the bed; networks: none"),
    (lambda d: d["machines"]["host"].pop("nic"),
     "networks.fabric: must join exactly two machines with one NIC each (point to point); it has NICs of: target"),
    (lambda d: d["machines"]["host"]["nic"][0].update(address="10.0.1.2/24"),
     "networks.fabric: its two addresses must be different hosts of one subnet (got 10.0.0.1/24 and 10.0.1.2/24)"),
    (lambda d: d["machines"]["host"]["nic"][0].update(address="10.0.0.300/24"),
     "machines.host.nic[0].address: must be an IPv4 address with its prefix"),
    (lambda d: d["machines"]["host"]["nic"][0].update(address="10.0.0.255/24"),
     "machines.host.nic[0].address: must be a host address in a network of /30 or larger"),
    (lambda d: d["machines"]["host"]["nic"][0].update(speed=10), "machines.host.nic[0].speed: unknown field"),
    (lambda d: d["networks"]["fabric"].update(kind="tap"), "networks.fabric.kind: must be one of dgram (got 'tap')"),
    (lambda d: d["machines"].update(Host={}), "machines.Host: a role is lower-case letters"),
    (lambda d: d["machines"]["target"]["nic"][0].update(id="nvme0"),
     "machines.target.nic[0].id: must be unique among NICs and NVMe controllers (duplicate 'nvme0')"),
    (lambda d: d.update(machine={}), "machine: unknown field; allowed: bed, machines, networks"),
])
def test_each_mistake_is_one_line(edit, error: str) -> None:  # type: ignore[no-untyped-def]
    data = tomllib.loads(GOOD)
    edit(data)
    with pytest.raises(ConfigError) as e:
        beds.parse(data, "nvmf.toml")
    assert str(e.value).startswith("nvmf.toml: ") and error in str(e.value) and "\n" not in str(e.value)


def test_the_example_bed_loads() -> None:
    b = beds.load(Path(__file__).resolve().parent.parent / "examples" / "bed.toml")
    assert list(b.machines) == ["target", "host"] and b.machine("target").nics[0].ip == "192.168.77.1"


def test_a_topology_file_is_a_bed_of_one(tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text('[[nvme]]\nid = "nvme0"\n')
    b = beds.load(tmp_path / "one.toml")
    assert list(b.machines) == [beds.DEFAULT_ROLE] and b.machines["default"].controllers[0].id == "nvme0"
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"bad\.toml: not a text file \(byte 0 is not UTF-8\)"):
        beds.load(tmp_path / "bad.toml")


def test_the_command_lines_join_the_two_ends(tmp_path: Path) -> None:
    b = beds.pair()
    ends = links.allocate(b)
    t, h = ends["target"]["fabric0"], ends["host"]["fabric0"]
    assert (t.local, t.remote) == (h.remote, h.local) and t.local != t.remote
    img = tmp_path / "img"
    img.mkdir()
    (img / "manifest.json").write_text(json.dumps({"cmdline": "console=ttyS0", "digest": "x"}))
    m = Machine(b.machine("target"), Image(img), tmp_path / "art", name="t1", links=ends["target"])
    argv = m.argv(40022)
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs[1] == (f"dgram,id=fabric0,local.type=inet,local.host=127.0.0.1,local.port={t.local},"
                          f"remote.type=inet,remote.host=127.0.0.1,remote.port={t.remote}")
    devs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]
    ports = {d["id"]: d["chassis"] for d in devs if d["driver"] == "pcie-root-port"}
    assert ports == {"rp-nvme0": 1, "rp-nvme1": 2, "rp-fabric0": 3}  # the controllers' numbers unchanged
    nic = next(d for d in devs if d["driver"] == "virtio-net-pci" and d["id"] == "fabric0")
    assert nic == {"driver": "virtio-net-pci", "netdev": "fabric0", "id": "fabric0",
                   "mac": b.machine("target").nics[0].mac("target"), "bus": "rp-fabric0"}
    with pytest.raises(Exception, match="NIC.s. fabric0 have no network peer"):
        Machine(b.machine("target"), Image(img), tmp_path / "art", name="t2").argv(40022)


def test_a_saved_guest_has_its_nics_root_ports_and_no_nic(tmp_path: Path) -> None:
    """A bed's machine is saved as its controllers are: its NIC's root port empty (the NIC's MAC
    and its network's ends are each machine's own, hot-added after the restore); a NIC that is not
    hot-pluggable cannot be saved, and says so."""
    from orchestrator.machines import snapshot
    from orchestrator.vm.machine import Saved

    img = tmp_path / "img"
    img.mkdir()
    (img / "manifest.json").write_text(json.dumps({"cmdline": "console=ttyS0", "digest": "x"}))
    target = beds.pair().machine("target")
    argv = Machine(target, Image(img), tmp_path / "art", name="t1", empty_ports=True).argv(40022)  # no peer needed
    devs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]
    assert [d["id"] for d in devs if d["driver"] == "pcie-root-port"] == ["rp-nvme0", "rp-nvme1", "rp-fabric0"]
    assert not [d for d in devs if d["id"] == "fabric0"] and "fabric0" not in " ".join(argv[i + 1] for i, a in
                                                                                      enumerate(argv) if a == "-netdev")
    with pytest.raises(Exception, match="NIC.s. fabric0 have no network peer"):  # a restored one hot-adds it
        Machine(target, Image(img), tmp_path / "art", name="t2", restore=Saved(tmp_path / "s")).argv(40022)
    assert snapshot.unsupported(target, "kvm") is None
    fixed = beds.parse(tomllib.loads(GOOD), "bed.toml").machine("host")
    assert (snapshot.unsupported(fixed, "kvm") or "").startswith("NIC(s) eth_fabric not hot-pluggable: ")


def test_a_qemu_without_dgram_is_refused() -> None:
    q = dataclasses.replace(qemu_binary.current(), netdevs=frozenset({"user"}))
    with pytest.raises(ConfigError, match="nic: QEMU .* has no dgram netdev"):
        topology.check_qemu(beds.pair().machine("host"), q)


@pytest.mark.vm
def test_two_machines_boot_together_and_talk(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    machines = machine_beds.boot(beds.pair(), guest_image, accelerator, tmp_path / "art")
    try:
        target, host = machines["target"], machines["host"]
        assert net.reachable(host.ssh, "10.0.0.1") and net.reachable(target.ssh, "10.0.0.2")
        # the NIC of the topology, found by its MAC, holds the topology's address
        shown = host.ssh.run("ip -o -4 addr show; ip -o link", timeout=10, check=True).stdout
        dev = next(ln.split(":")[1].strip() for ln in shown.splitlines() if host.topology.nics[0].mac("host") in ln)
        assert f"{dev}    inet 10.0.0.2/24" in shown
    finally:
        machine_beds.shutdown(machines)


@pytest.mark.vm
def test_a_restored_bed_gets_its_nics_hot_added_and_talks(guest_image: Image, accelerator: str,
                                                          tmp_path: Path) -> None:
    """Both machines of the pair restored from their saved guests: each NIC hot-added with its
    own MAC on the network's ends of this start, given its address, the peer reachable; the NIC
    can still be pulled and put back."""
    from orchestrator.faults import NicFault
    from orchestrator.machines import snapshot

    b = beds.pair()
    if snapshot.unsupported(b.machine("target"), accelerator):
        pytest.skip(f"no saved guests here: {snapshot.unsupported(b.machine('target'), accelerator)}")
    saved = {role: snapshot.ensure(topo, guest_image, accelerator) for role, topo in b.machines.items()}
    machines = machine_beds.boot(b, guest_image, accelerator, tmp_path / "art", restore=saved)
    try:
        target, host = machines["target"], machines["host"]
        assert net.reachable(host.ssh, "10.0.0.1") and net.reachable(target.ssh, "10.0.0.2")
        mac = host.topology.nics[0].mac(host.topology.name)
        assert host.ssh.run(f"ip -o -4 addr show dev {net.device(host.ssh, mac)}", timeout=10,
                            check=True).stdout.split()[3] == "10.0.0.2/24"
        fault = NicFault(target, "fabric0")
        fault.remove()
        fault.add()
        assert net.reachable(host.ssh, "10.0.0.1")
    finally:
        machine_beds.shutdown(machines)
    for role in b.machines:
        assert "ready (restored from" in (tmp_path / "art" / role / "machine.log").read_text()
        assert "dgram" not in (tmp_path / "art" / role / "qemu.argv").read_text()  # the NIC came after the restore


@pytest.mark.vm
def test_a_bed_that_cannot_boot_leaves_nothing(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    """Both machines miss a 1 s deadline: the error names one, and no QEMU, socket or run
    directory is left (the no_leaks fixture checks)."""
    with pytest.raises(Exception, match="guest not ready"):
        machine_beds.boot(beds.pair(), guest_image, accelerator, tmp_path / "art", boot_timeout=1.0)


@pytest.mark.vm
def test_a_suite_gets_its_bed_by_role_and_another_from_a_file(tmp_path: Path) -> None:
    from conftest import tbctl

    suite = Path(__file__).parent / "engine_suites" / "demo_bed.py"
    r = tbctl(tmp_path, "run", str(suite), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["counts"]["passed"] == 2
    art = Path(doc["artifacts"]) / "demo_bed" / "bed-1"
    assert {p.name for p in art.iterdir()} == {"target", "host"}  # one bed for the module, booted once
    (tmp_path / "mine.toml").write_text(GOOD.replace("10.0.0.", "192.168.7."))
    r = tbctl(tmp_path, "run", str(suite), "--bed", str(tmp_path / "mine.toml"), "--snapshot", "--json",
              str(tmp_path / "r2.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    # with snapshots: the target restored (its NIC hot-added), the host cold (its NIC is not hot-pluggable)
    start = json.loads((tmp_path / "r2.json").read_text())["start"]
    if qemu_binary.current().at_least(10):  # no saves under QEMU 10's TCG (machines.snapshot)
        assert start.startswith("cold boot: QEMU "), start
    else:
        assert re.fullmatch(r"snapshot [0-9a-f]{16}; cold boot: NIC\(s\) eth_fabric not hot-pluggable: .*", start), start
    (tmp_path / "bad.toml").write_text(GOOD.replace('kind = "dgram"', 'kind = "tap"'))
    r = tbctl(tmp_path, "run", str(suite), "--bed", str(tmp_path / "bad.toml"))
    assert r.returncode == 2 and f"{tmp_path / 'bad.toml'}: networks.fabric.kind: must be one of dgram" in r.stderr


@pytest.mark.vm
def test_nvmf_device_removal_runs_end_to_end(tmp_path: Path) -> None:
    """The seed-003 suite on the built-in pair bed, kernel target and host: over TCP the target lets
    go of its NIC and service returns. Over RDMA (soft-RoCE) it passed here too, but the 6.1
    kernel has hung tearing the RDMA device down (suites/known_failures.toml): that is a finding, reported as the
    guest's crash with its hung-task title, never a silent hang."""
    from conftest import tbctl

    r = tbctl(tmp_path, "run", "nvmf_device_removal", "--json", str(tmp_path / "r.json"))
    res = {t["nodeid"].rsplit("::", 1)[1]: t for t in json.loads((tmp_path / "r.json").read_text())["tests"]}
    tcp = res["test_target_nic_pulled_under_io[kernel_target-kernel_host-tcp]"]
    assert tcp["outcome"] == "passed" or tcp.get("known", {}).get("outcome") == "guest crashed", r.stdout[-3000:]
    rdma = res["test_target_nic_pulled_under_io[kernel_target-kernel_host-rdma]"]
    if rdma["outcome"] == "known failure":  # the hang: still titled, with the stuck machine's stacks
        assert rdma["message"].startswith("guest crashed: INFO: task hung in "), rdma
        assert any(Path(rdma["artifacts"]).glob("sysrq-*.txt")), rdma
    else:
        assert rdma["outcome"] == "passed", rdma
    assert r.returncode == 0, r.stdout[-3000:]  # the SPDK variants skip: no tree given


@pytest.mark.vm
def test_a_bed_up_by_hand_takes_network_and_target_faults(tmp_path: Path) -> None:
    """`tbctl up --bed pair`: both machines stay up, joined by their network; `tbctl inject` pulls
    the target's NIC and puts it back, sets its link down and up, signals a program in it and
    pauses it; `tbctl down` leaves nothing."""
    from conftest import tbctl

    # one string for the guest's shell, as OpenSSH takes it
    reach = ["--", "python3 -c \"import socket; socket.create_connection(('10.0.0.2', 22), 3); print('reached')\""]
    up = tbctl(tmp_path, "up", "--bed", "pair", "--name", "hand", timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert "hand-target: target, ssh 127.0.0.1:" in up.stdout and "fabric0 10.0.0.1/24 on fabric" in up.stdout
        assert {r["name"] for r in json.loads(tbctl(tmp_path, "status", "--json").stdout)} == {"hand-target",
                                                                                             "hand-host"}
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).stdout.strip() == "reached"
        r = tbctl(tmp_path, "inject", "hand-target", "nic-remove", "fabric0")
        assert r.returncode == 0 and "fabric0: pulled; DEVICE_DELETED fabric0" in r.stdout, r.stderr
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).returncode != 0  # no route: the NIC is gone
        r = tbctl(tmp_path, "inject", "hand-target", "nic-add", "fabric0")
        assert r.returncode == 0 and "with 10.0.0.1/24" in r.stdout, r.stderr
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).stdout.strip() == "reached"
        r = tbctl(tmp_path, "inject", "hand-target", "nic-remove", "fabric0", "--via", "guest")
        assert r.returncode == 0 and "fabric0: pulled; the guest removed PCI device 0000:" in r.stdout, r.stderr
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).returncode != 0
        r = tbctl(tmp_path, "inject", "hand-target", "nic-add", "fabric0", "--via", "guest")
        assert r.returncode == 0 and "with 10.0.0.1/24" in r.stdout, r.stderr
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).stdout.strip() == "reached"
        r = tbctl(tmp_path, "inject", "hand-target", "link-down", "fabric0")
        assert r.returncode == 0 and "fabric0: link down; the guest's " in r.stdout and "lost its carrier" in r.stdout
        # the fault returns once the guest saw it: the link is down for the very next command
        nic = re.search(r"the guest's (\S+) lost", r.stdout)
        assert nic and tbctl(tmp_path, "ssh", "hand-target", "cat", f"/sys/class/net/{nic[1]}/carrier").stdout.strip() == "0"
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).returncode != 0
        r = tbctl(tmp_path, "inject", "hand-target", "link-up", "fabric0")
        assert r.returncode == 0 and "has its carrier" in r.stdout, r.stderr
        assert tbctl(tmp_path, "ssh", "hand-target", *reach).stdout.strip() == "reached"
        tbctl(tmp_path, "ssh", "hand-host", "--", "setsid sleep 600 </dev/null >/dev/null 2>&1 &")
        r = tbctl(tmp_path, "inject", "hand-host", "app-signal", "sleep", "KILL")
        assert r.returncode == 0 and r.stdout.startswith("sleep: SIGKILL to pid "), r.stderr
        assert tbctl(tmp_path, "ssh", "hand-host", "--", "pidof", "sleep").returncode == 1
        r = tbctl(tmp_path, "inject", "hand-host", "app-signal", "sleep", "TERM")
        assert r.returncode == 2 and "no process of program 'sleep' in the guest" in r.stderr, r.stderr
        assert tbctl(tmp_path, "inject", "hand-host", "vm-pause").stdout.strip() == "hand-host: paused"
        assert tbctl(tmp_path, "inject", "hand-host", "vm-resume").stdout.strip() == "hand-host: running"
    finally:
        down = tbctl(tmp_path, "down", "--all", timeout=300)
    assert down.returncode == 0, down.stderr
    assert tbctl(tmp_path, "status").stdout.strip() == ""
