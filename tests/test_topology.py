"""Topology loading: good files load; every bad one fails on one line naming file, field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import topology
from orchestrator.errors import ConfigError

GOOD = """
[machine]
name = "two_ctrl"
memory_mib = 2048
cpus = 2
accel = "tcg"
iommu = true
hugepages = 64
qtest = true

[[nvme]]
id = "nvme0"
serial = "SN0"

[[nvme]]
id = "nvme1"
serial = "SN1"
hotplug = false
max_ioqpairs = 4
cmb_size_mib = 16
  [[nvme.namespace]]
  size_mib = 64
  block_size = 4096
  [[nvme.namespace]]
  size_mib = 32
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "topo.toml"
    p.write_text(text)
    return p


def test_default_has_two_hotpluggable_controllers() -> None:
    t = topology.default()
    assert [c.id for c in t.controllers] == ["nvme0", "nvme1"]
    assert all(c.hotplug and len(c.namespaces) == 1 for c in t.controllers)
    assert t.accel == "auto" and not t.iommu and t.qtest


def test_good_file_loads(tmp_path: Path) -> None:
    t = topology.load(write(tmp_path, GOOD))
    assert (t.name, t.memory_mib, t.iommu, t.hugepages, t.qtest) == ("two_ctrl", 2048, True, 64, True)
    n1 = t.controller("nvme1")
    assert not n1.hotplug and [ns.block_size for ns in n1.namespaces] == [4096, 512]
    assert n1.device()["max_ioqpairs"] == 4 and n1.device()["cmb_size_mb"] == 16
    assert "drive" not in n1.device() and len(n1.namespace_devices()) == 2
    assert t.kernel_args() == "nvme_core.multipath=N intel_iommu=on hugepages=64"


BAD = [
    ("[machine\n", "not valid TOML"),
    ("[machine]\nmemory = 1\n", "machine.memory: unknown field; allowed: name, image, memory_mib"),
    ("[machine]\nmemory_mib = 100\n", "machine.memory_mib: must be an integer from 256 to 65536 (got 100)"),
    ("[machine]\nmemory_mib = \"1G\"\n", "machine.memory_mib: must be an integer from 256 to 65536 (got '1G')"),
    ("[machine]\ncpus = 0\n", "machine.cpus: must be an integer from 1 to 16 (got 0)"),
    ("[machine]\ncpus = true\n", "machine.cpus: must be an integer"),
    ("[machine]\naccel = \"hvf\"\n", "machine.accel: must be one of auto, kvm, tcg (got 'hvf')"),
    ("[machine]\niommu = \"yes\"\n", "machine.iommu: must be true or false (got 'yes')"),
    ("[machine]\nhugepages = 400\n", "machine.hugepages: must be at most 256"),
    ("[machine]\nname = \"Bad Name\"\n", "machine.name: must be lower-case letters"),
    ("colour = 1\n", "colour: unknown field; allowed: machine, nvme"),
    ("machine = 3\n", "machine: must be a table"),
    ("nvme = 3\n", "nvme: must be an array of tables"),
    ("[[nvme]]\nserial = \"X\"\n", "nvme[0].id: must be set"),
    ("[[nvme]]\nid = \"NVMe0\"\n", "nvme[0].id: must be lower-case letters"),
    ("[[nvme]]\nid = \"nvme0\"\nserial = \"has space\"\n", "nvme[0].serial: must be 1-20 characters"),
    ("[[nvme]]\nid = \"nvme0\"\nserial = \"a,b\"\n", "nvme[0].serial: must be 1-20 characters"),
    ("[[nvme]]\nid = \"nvme0\"\nhotplug = 1\n", "nvme[0].hotplug: must be true or false (got 1)"),
    ("[[nvme]]\nid = \"nvme0\"\nsize = 1\n", "nvme[0].size: unknown field"),
    ("[[nvme]]\nid = \"a\"\n[[nvme]]\nid = \"a\"\n", "nvme[1].id: must be unique (duplicate 'a')"),
    ("[[nvme]]\nid = \"a\"\nserial = \"S\"\n[[nvme]]\nid = \"b\"\nserial = \"S\"\n",
     "nvme[1].serial: must be unique (duplicate 'S')"),
    ("[[nvme]]\nid = \"a\"\n[[nvme.namespace]]\nblock_size = 1024\n",
     "nvme[0].namespace[0].block_size: must be one of 512, 4096 (got 1024)"),
    ("[[nvme]]\nid = \"a\"\n[[nvme.namespace]]\nsize_mib = 0\n", "nvme[0].namespace[0].size_mib: must be an integer"),
    ("[[nvme]]\nid = \"a\"\n[[nvme.namespace]]\nzone = true\n", "nvme[0].namespace[0].zone: unknown field"),
    ("[[nvme]]\nid = \"a\"\n[[nvme.namespace]]\n[[nvme.namespace]]\n",
     "nvme[0].hotplug: must be false for a controller with several namespaces"),
    ("[[nvme]]\nid = \"a\"\nsubsystem = \"s0\"\n", "nvme[0].hotplug: must be false"),
    ("[[nvme]]\nid = \"a\"\n[[nvme.namespace]]\nzoned = true\n", "nvme[0].hotplug: must be false"),
    ("[[nvme]]\nid = \"a\"\n[[nvme.namespace]]\nmetadata_size = 8\n",
     "nvme[0].hotplug: must be false for a controller with several namespaces, ZNS, metadata"),
    ("[[nvme]]\nid = \"a\"\nhotplug = false\n[[nvme.namespace]]\nmetadata_size = 12\n",
     "nvme[0].namespace[0].metadata_size: must be a multiple of 8 bytes from 0 to 128 (got 12)"),
    ("[[nvme]]\nid = \"a\"\nhotplug = false\n[[nvme.namespace]]\nprotection = 1\n",
     "nvme[0].namespace[0].protection: must be 0 unless metadata_size is at least 8"),
    ("[[nvme]]\nid = \"a\"\nhotplug = false\n[[nvme.namespace]]\nmetadata_size = 8\nprotection = 4\n",
     "nvme[0].namespace[0].protection: must be an integer from 0 to 3 (got 4)"),
    ("[[nvme]]\nid = \"a\"\nioeventfd = \"on\"\n", "nvme[0].ioeventfd: must be true or false (got 'on')"),
    ("[[nvme]]\nid = \"a\"\nmax_ioqpairs = 0\n", "nvme[0].max_ioqpairs: must be an integer from 1 to 256 (got 0)"),
    ("[[nvme]]\nid = \"a\"\nnamespace = 5\n", "nvme[0].namespace: must be an array of tables"),
    ("nvme = [5]\n", "nvme[0]: must be a table"),
    ("".join(f"[[nvme]]\nid = \"c{i}\"\n" for i in range(17)), "nvme: must be at most 16 controllers (got 17)"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_file_gives_one_line_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        topology.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg
    assert "\n" not in msg.strip()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read topology: no such file \(built in: spdk-ci\)$"):
        topology.load(tmp_path / "nope.toml")


def test_the_builtin_spdk_ci_topology_has_the_kinds_of_device_spdks_ci_vms_have(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--topology spdk-ci` names a file shipped with tbctl (a file, so specs and repro bundles
    carry it); a file of that name in the directory wins. Its namespaces go to QEMU with their
    metadata and protection; a plain one stays the controller's own (hot-pluggable) drive."""
    path = topology.ref("spdk-ci")
    assert path == str(topology.BUILTIN_DIR / "spdk-ci.toml") and topology.ref("x.toml") == "x.toml"
    t = topology.load(path)
    assert t.iommu and t.cpus == 4 and len(t.controllers) == 6
    hot = [c.id for c in t.controllers if c.hotplug]
    assert hot == ["nvme0", "nvme1"] and all("drive" in t.controller(c).device() for c in hot)
    assert t.controller("nvme0").namespaces[0].size_mib >= 3 * 1024  # test/setup/devices.sh's min_disk_size
    assert t.controller("nvme1").device()["ioeventfd"] is True and t.controller("nvme2").device()["mdts"] == 0
    assert [d.get("zoned") for d in t.controller("nvme3").namespace_devices()] == [True]
    assert [(d.get("ms"), d.get("pi"), d["logical_block_size"]) for d in t.controller("nvme4").namespace_devices()] == [
        (8, 1, 512), (8, 2, 4096), (8, 3, 4096), (64, None, 4096)]
    assert t.controller("nvme5").device()["cmb_size_mb"] == 64 and t.controller("nvme5").pmr_size_mib == 16
    (tmp_path / "spdk-ci").write_text("")
    monkeypatch.chdir(tmp_path)
    assert topology.ref("spdk-ci") == "spdk-ci"


def test_unknown_controller_lookup_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="no NVMe controller 'nvme9'.*controllers: nvme0, nvme1"):
        topology.default().controller("nvme9")
