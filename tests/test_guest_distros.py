"""A second guest distro: Debian trixie boots like bookworm, and a tree built on its newer
userland is refused by bookworm's image before a boot and starts on trixie's unchanged.

Under TCG a trixie guest (kernel 6.12) sometimes loses the first admin completion of a controller
at boot ("I/O tag N QID 0 timeout, disable controller", "probe with driver nvme failed"), and 6.12
leaves the function without a driver: a machine getting ready probes such a controller again and
logs why (test_a_controller_whose_probe_failed_is_probed_again_while_getting_ready)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import STANDIN, tbctl

from orchestrator import guest, image
from orchestrator.config import topology
from orchestrator.errors import DeadlineError
from orchestrator.image import shell as image_shell
from orchestrator.machines import Machine
from orchestrator.vm.qmp import pci_address

pytestmark = pytest.mark.vm


def test_trixie_boots_and_hotplugs(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "smoke", "--image", "trixie")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nvme0: removal seen by the guest" in r.stdout and r.stdout.strip().splitlines()[-1].startswith("passed")
    assert image.ensure("trixie").manifest["kernel"].startswith("6.12")


def test_a_controller_whose_probe_failed_is_probed_again_while_getting_ready(accelerator: str,
                                                                             tmp_path: Path) -> None:
    # A failed probe cannot be forced on demand; its end state can: the function without a driver.
    with Machine(topology.default(), image.ensure("trixie"), tmp_path / "art", accel=accelerator) as m:
        bdf = pci_address(m.qmp.execute("query-pci"), "nvme1")
        assert bdf is not None
        m.ssh.run(f"echo {bdf} > /sys/bus/pci/drivers/nvme/unbind", timeout=20, check=True)
        # A test's own wait leaves it alone: a probe failure there is the test's finding.
        with pytest.raises(DeadlineError, match="TBCTL0002 did not appear"):
            guest.NvmeWatch(m.ssh, ["TBCTL0002"], True, 7, addresses={"TBCTL0002": bdf}).result()
        state, _ = guest.NvmeWatch(m.ssh, ["TBCTL0002"], True, 30, addresses={"TBCTL0002": bdf},
                                   reprobe=True).result()
        assert state.controllers["TBCTL0002"]["state"] == "live" and state.controllers["TBCTL0002"]["block"]
        assert [(r["serial"], r["address"], r["outcome"]) for r in state.reprobed] == \
            [("TBCTL0002", bdf, "probed again")]
        assert state.reprobed[0]["after"] >= 5  # the grace a pending probe gets before it counts as failed


def test_a_tree_built_on_trixie_is_refused_by_bookworm_and_runs_on_trixie(tmp_path: Path) -> None:
    tree = tmp_path / "standin"
    shutil.copytree(STANDIN, tree, ignore=shutil.ignore_patterns("build", "test"))
    assert image_shell.run(image.ensure("trixie-spdk"), [tree], ["make", "-s"], timeout=300) == 0
    image.ensure(image.SPDK_IMAGE)
    r = tbctl(tmp_path, "spdk", "check", "--spdk-dir", str(tree), "--image", image.SPDK_IMAGE, "--no-start")
    assert r.returncode == 1, r.stdout + r.stderr
    fuse, libc = [ln for ln in r.stdout.splitlines() if ln.startswith("problem: ")]
    # trixie's libfuse3 has another soname, and its glibc newer symbol versions (__isoc23_strtol)
    assert fuse == ("problem: build/lib/libspdk_env_standin.so.1: needs libfuse3.so.4; the guest image "
                    "bookworm-spdk has no libfuse3.so.4; use --image trixie-spdk, which has it (package libfuse3-4)")
    assert libc.startswith("problem: build/lib/libspdk_env_standin.so.1: needs GLIBC_2.38 from libc.so.6; "
                           "the guest's libc.so.6 has up to GLIBC_2.36; it was built against a newer libc.so.6")
    assert libc.endswith("or use --image trixie-spdk, which has it (package libc6)")
    r = tbctl(tmp_path, "spdk", "check", "--spdk-dir", str(tree), "--image", "trixie-spdk")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "start probe: build/examples/hotplug started in the guest and exited 0" in r.stdout
