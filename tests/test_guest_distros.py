"""A second guest distro: Debian trixie boots like bookworm, and a tree built on its newer
userland is refused by bookworm's image before a boot and starts on trixie's unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import STANDIN, tbctl
from orchestrator import image, image_shell

pytestmark = pytest.mark.vm


def test_trixie_boots_and_hotplugs(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "smoke", "--image", "trixie")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nvme0: removal seen by the guest" in r.stdout and r.stdout.strip().splitlines()[-1].startswith("passed")
    assert image.ensure("trixie").manifest["kernel"].startswith("6.12")


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
