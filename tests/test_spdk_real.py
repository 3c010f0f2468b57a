"""A real SPDK tree, as its user built it, through tbctl: check, start probe, the SPDK suites.

The tree is TBCTL_SPDK_DIR, else ~/.cache/tbctl/spdk (built by hand in the guest's userland,
following SPDK's own docs: tbctl ships no SPDK). Without one these tests skip and say so.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import tbctl

from orchestrator import image, spdk
from orchestrator.config import topology
from orchestrator.errors import MachineError
from orchestrator.machines import Machine
from orchestrator.spdk import rpc as spdk_rpc
from orchestrator.spdk.tree import Tree

TREE = Path(os.environ.get("TBCTL_SPDK_DIR") or Path.home() / ".cache" / "tbctl" / "spdk")
SPDK_TESTS = ("test_orderly_hotplug[spdk]", "test_surprise_removal[spdk]", "test_orderly_hotplug[spdk_uio]",
              "test_surprise_removal[spdk_uio]", "test_spdk_doorbell_aers")
# How QEMU itself breaks under SPDK's hotplug I/O (suites/known_failures.toml: use-after-free on
# device_del while a vCPU writes the doorbell of the controller being unplugged, or heap corruption
# it leaves; a device the guest ejected and QEMU unrealized but never deleted). A test that hit one of these
# says so in its first line; any other failure fails.
QEMU_BREAKS = re.compile(r"^qemu crashed: QEMU SIG[A-Z]+ |no DEVICE_DELETED within .*stuck inside QEMU")

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(not Tree(TREE).apps, reason=f"no built SPDK tree at {TREE} (set TBCTL_SPDK_DIR)"),
]


def test_spdk_check_passes_and_an_app_starts_in_the_guest(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "spdk", "check", "--spdk-dir", str(TREE))
    assert r.returncode == 0, r.stdout + r.stderr
    probe = [ln for ln in r.stdout.splitlines() if ln.startswith("start probe: build/")]
    assert probe and "started in the guest and exited 0" in probe[0] and "it attached 0000:" in probe[0]
    assert r.stdout.strip().endswith("spdk check: passed")


def test_the_tree_is_refused_before_a_boot_where_a_library_is_missing(tmp_path: Path) -> None:
    """The default image lacks libfuse3 (a static SPDK build links it): one line per need, exit 2,
    no VM started (the no_leaks fixture checks), no run artifacts."""
    image.ensure(image.DEFAULT_IMAGE), image.ensure(image.SPDK_IMAGE)
    r = tbctl(tmp_path, "run", "sw_hotplug", "--spdk-dir", str(TREE), "--image", image.DEFAULT_IMAGE)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"tbctl: --spdk-dir {TREE}: its apps cannot start in image {image.DEFAULT_IMAGE}:"
    assert any("build/examples/hotplug" in ln and "needs libfuse3.so.3" in ln and "use --image bookworm-spdk" in ln
               for ln in lines[1:])
    assert not (tmp_path / "art").exists()


def test_the_spdk_suites_run_the_real_apps(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", "sw_hotplug", "nvme_doorbell_aers", "nvme_media_errors", "nvme_smart_warnings",
              "nvme_io_stalls", "nvme_resets", "nvme_pcie_errors", "-k", "spdk", "--spdk-dir", str(TREE), "--json",
              str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    res = {t["nodeid"].rsplit("::", 1)[1]: t for t in doc["tests"]}
    assert doc["image"]["name"] == image.SPDK_IMAGE and doc["spdk_dir"] == str(TREE)
    assert "test_hotplug_under_io[spdk]" not in res  # SPDK's app runs its own I/O: kernel only
    for name in SPDK_TESTS:
        t = res[name]
        first = (t.get("message") or "").splitlines()[0] if t.get("message") else ""
        assert t["outcome"] == "passed" or QEMU_BREAKS.search(first), (name, t, r.stdout[-3000:])
    # doorbell_aers and the apps under device-side faults have no hotplug in them: they must pass,
    # with SPDK's own three verdicts, and its apps' own words for what QEMU did
    assert res["test_spdk_doorbell_aers"]["outcome"] == "passed"
    for name in ("test_spdk_perf_gets_the_read_error", "test_spdk_aer_app_gets_the_smart_aer",  # and its AER,
                 "test_spdk_perf_waits_out_the_hold",  # and a held read's latency,
                 "test_spdk_perf_reads_on_through_a_non_fatal_error"):  # and perf unmoved by an AER
        assert res[name]["outcome"] == "passed", res[name]
    # and bdev_nvme's reset, unless QEMU itself crashed completing I/O across it (known_failures.toml)
    reset_test = res["test_spdk_bdev_nvme_resets_a_controller_disabled_behind_its_back"]
    assert reset_test["outcome"] == "passed" or (reset_test.get("message") or "").startswith(
        "qemu crashed: QEMU SIGSEGV in nvme_rw_complete_cb"), reset_test
    log = (Path(res["test_spdk_doorbell_aers"]["artifacts"]) / "doorbell_aers.log").read_text()
    assert log.count("Success: ") == 3
    reset = (Path(res["test_spdk_bdev_nvme_resets_a_controller_disabled_behind_its_back"]["artifacts"]) /
             "bdevperf.log").read_text()
    assert "Starting SPDK v" in reset and "bdev_nvme.c" in reset
    # SPDK's own words, not a stand-in's (the suite itself counted 8 removals and 8 insertions to
    # pass): under vfio-pci SPDK's app prints "Controller removed" twice for one removal, on
    # uio_pci_generic once
    for name, printed in (("test_orderly_hotplug[spdk]", range(8, 17)), ("test_orderly_hotplug[spdk_uio]", (8,))):
        if res[name]["outcome"] == "passed":
            app = (Path(res[name]["artifacts"]) / "app-spdk.log").read_text()
            assert "nvme_ctrlr.c" in app and app.count("Controller removed: QEMU NVMe Ctrl") in printed, (name, app)


def test_an_rpc_app_is_driven_with_spdks_own_client(tmp_path: Path, accelerator: str) -> None:
    """nvmf_tgt in the guest, called from the host through SPDK's JSON-RPC client (PyPI `spdk`)
    over the SSH-relayed socket; a method it does not know is an error with SPDK's own words."""
    img = image.ensure(image.SPDK_IMAGE)
    tree = Tree(TREE)
    m = Machine(topology.default(), img, tmp_path / "vm", accel=accelerator, persistent=False,
                shares={"spdk": TREE})
    with m:
        spdk.prepare(m.ssh, hugepages=spdk.RPC_HUGEPAGES)
        app = spdk.serve(m.ssh, tree, "build/bin/nvmf_tgt", ["-m", "0x1"], timeout=300)
        with spdk_rpc.Rpc(m.ssh, m.run_dir) as rpc:
            version = rpc.call("spdk_get_version")  # a git build adds " git sha1 <commit>" to the string
            f = version["fields"]
            assert f"{f['major']}.{f['minor']:02d}.{f['patch']}" == tree.release.partition("-")[0]
            assert version["version"].startswith(f"SPDK v{f['major']}.{f['minor']:02d}")
            assert rpc.call("bdev_malloc_create", num_blocks=2048, block_size=512, name="Malloc0") == "Malloc0"
            assert [b["name"] for b in rpc.call("bdev_get_bdevs")] == ["Malloc0"]
            with pytest.raises(MachineError, match="SPDK RPC no_such_method on /var/tmp/spdk.sock failed: "
                                                   "Method not found"):
                rpc.call("no_such_method")
        app.signal("INT")
        assert app.wait().rc == 0


def test_an_rpc_app_that_cannot_start_says_why(tmp_path: Path, accelerator: str) -> None:
    """Too few hugepages for nvmf_tgt's buffer pools: the diagnosis, not a timeout."""
    img = image.ensure(image.SPDK_IMAGE)
    m = Machine(topology.default(), img, tmp_path / "vm", accel=accelerator, persistent=False,
                shares={"spdk": TREE})
    with m:
        spdk.prepare(m.ssh, hugepages=16)
        with pytest.raises(spdk.AppDidNotStart, match="not enough free hugepage memory for the app's memory pools"):
            spdk.serve(m.ssh, Tree(TREE), "build/bin/nvmf_tgt", ["-m", "0x1"], timeout=300)
