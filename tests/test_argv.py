"""The QEMU command line rendered from templates/qemu/argv.j2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from orchestrator.config import topology
from orchestrator.image import Image
from orchestrator.machines import Machine


def fake_image(tmp_path: Path) -> Image:
    d = tmp_path / "img"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"cmdline": "console=ttyS0 root=/dev/vda", "digest": "x"}))
    return Image(d)


def opts(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def devices(argv: list[str]) -> list[dict]:
    return [json.loads(d) for d in opts(argv, "-device")]


def test_default_topology(tmp_path: Path) -> None:
    m = Machine(topology.default(), fake_image(tmp_path), tmp_path / "art", name="t1", accel="tcg")
    argv = m.argv(40022)
    assert argv[0] == str(m.qemu.path) and m.qemu.path.is_absolute()
    # the chosen QEMU's own qboot, not a fixed host path
    assert opts(argv, "-bios") == [str(m.qemu.firmware("qboot.rom"))]
    assert opts(argv, "-machine") == ["q35,dump-guest-core=off"] and opts(argv, "-accel") == [m.qemu.accel_option("tcg")] and opts(argv, "-cpu") == ["max"]
    assert opts(argv, "-netdev") == ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]
    devs = devices(argv)
    ports = [d for d in devs if d["driver"] == "pcie-root-port"]
    ctrls = [d for d in devs if d["driver"] == "nvme"]
    assert [p["id"] for p in ports] == ["rp-nvme0", "rp-nvme1"]
    assert len({p["chassis"] for p in ports}) == 2
    assert [c["bus"] for c in ctrls] == ["rp-nvme0", "rp-nvme1"]
    # hotplug re-adds exactly what the command line had
    assert ctrls[0] == m.topology.controller("nvme0").device()
    assert {"driver": "pvpanic-pci", "id": "pvpanic"} in devs
    qmp = [c for c in opts(argv, "-chardev") if c.startswith("socket,id=qmp")]
    assert qmp == [f"socket,id=qmp,path={m.run_dir}/qmp.sock,server=on,wait=off"]
    assert opts(argv, "-qtest") == [f"unix:{m.run_dir}/qtest.sock,server=on,wait=off"]
    # qtest's own log would fill qemu.stderr (the evidence of a QEMU crash) with guest memory dumps
    assert opts(argv, "-qtest-log") == ["none"]
    # the host's QEMU (Debian's) has the ACPI hotplug trace: always on, to tell where a removal stopped
    assert opts(argv, "-trace") == ["acpi_pci_*"]
    assert not any(d["driver"] == "intel-iommu" for d in devs)
    nodes = [json.loads(b)["node-name"] for b in opts(argv, "-blockdev")]
    assert nodes == ["nvme0-ns1", "nvme1-ns1"]


def test_iommu_qtest_hugepages_and_fixed_controllers(tmp_path: Path) -> None:
    topo = topology.parse({"machine": {"iommu": True, "qtest": True, "hugepages": 32},
                           "nvme": [{"id": "n0", "hotplug": False, "namespace": [{}, {"block_size": 4096}]}]}, "x")
    m = Machine(topo, fake_image(tmp_path), tmp_path / "art", name="t2", accel="kvm")
    argv = m.argv(1)
    assert opts(argv, "-machine") == ["q35,dump-guest-core=off,kernel-irqchip=split"] and opts(argv, "-cpu") == ["host"]
    devs = devices(argv)
    assert devs[0]["driver"] == "intel-iommu"  # must precede the PCI devices it translates
    assert devs[0]["aw-bits"] == 48  # DPDK maps its IOVAs at user virtual addresses
    assert opts(argv, "-qtest") == [f"unix:{m.run_dir}/qtest.sock,server=on,wait=off"]
    assert opts(argv, "-append")[0].endswith("nvme_core.multipath=N intel_iommu=on hugepages=32")
    assert not any(d["driver"] == "pcie-root-port" for d in devs)
    ns = [d for d in devs if d["driver"] == "nvme-ns"]
    assert [(d["nsid"], d["bus"], d["logical_block_size"]) for d in ns] == [(1, "n0", 512), (2, "n0", 4096)]


def test_no_hotplug_trace_where_the_binary_has_none(tmp_path: Path) -> None:
    m = Machine(topology.default(), fake_image(tmp_path), tmp_path / "art", name="t1", accel="tcg")
    m.qemu = dataclasses.replace(m.qemu, trace_events=frozenset())
    assert opts(m.argv(40022), "-trace") == []
    assert "has no acpi_pci_* trace events" in m.unplug_stopped("nvme0")


def test_tcg_runs_in_one_thread_on_a_qemu_whose_threads_lose_timer_interrupts(tmp_path: Path) -> None:
    """QEMU 10.0's multi-threaded TCG left a vCPU's timer interrupt in service for good (the
    comment at qemu_binary.TCG_SINGLE_THREAD_FROM): TCG in one thread there; 7.2 and KVM as before."""
    m = Machine(topology.default(), fake_image(tmp_path), tmp_path / "art", name="t1", accel="tcg")
    m.qemu = dataclasses.replace(m.qemu, version=(7, 2, 22))
    assert opts(m.argv(1), "-accel") == ["tcg"]
    m.qemu = dataclasses.replace(m.qemu, version=(10, 0, 2))
    assert opts(m.argv(1), "-accel") == ["tcg,thread=single"]
    m.accel = "kvm"
    assert opts(m.argv(1), "-accel") == ["kvm"]


def test_no_argument_is_empty_or_split(tmp_path: Path) -> None:
    m = Machine(topology.default(), fake_image(tmp_path), tmp_path / "art", name="t3", accel="tcg")
    argv = m.argv(1)
    assert all(a and a == a.strip() for a in argv)
    # multipath off (the guest shows QEMU 7.2 and 10.0 alike); the admin timeout for TCG only
    assert opts(argv, "-append") == ["console=ttyS0 root=/dev/vda sysrq_always_enabled nvme_core.multipath=N nvme_core.admin_timeout=20"]


def test_pci_lookup_behind_bridges_and_config_address() -> None:
    from orchestrator.vm.qmp import pci_address
    from orchestrator.vm.qtest import _config_addr, _ecam, mmconfig_base

    pci = [{"bus": 0, "devices": [{"bus": 0, "slot": 2, "function": 0, "qdev_id": "rp-nvme0",
                                   "pci_bridge": {"devices": [{"bus": 1, "slot": 0, "function": 0,
                                                               "qdev_id": "nvme0"}]}}]}]
    assert pci_address(pci, "nvme0") == "0000:01:00.0" and pci_address(pci, "nvme9") is None
    assert _config_addr("0000:01:00.0", 0x04) == 0x80010004
    assert _config_addr("0000:00:1f.2", 0x06) == 0x8000FA04
    # the same registers through MMCONFIG (the guest's MCFG base): one access, no shared latch
    assert _ecam(0xB0000000, "0000:01:00.0", 0x04) == 0xB0100004
    assert _ecam(0xB0000000, "0000:00:1f.2", 0x06) == 0xB00FA006
    assert mmconfig_base(lambda *a: 0xB0000000) == 0xB0000000
    assert mmconfig_base(lambda *a: (1 << 64) - 1) is None  # before the firmware mapped it


def test_a_kernel_stall_at_boot_is_told_from_a_slow_boot() -> None:
    from orchestrator.vm.machine import _STALL
    stall = "[   23.692635] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[   23.69] rcu: \t1-...!: (0 ticks)\n"
    assert _STALL.search(stall).group(0) == "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks"  # type: ignore[union-attr]
    assert _STALL.search("[ 1.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [swapper/1:0]\n")
    assert _STALL.search("[ 9.1] nvme nvme0: 2/0/0 default/read/poll queues\n") is None
