"""A second guest distro: a tree built on Debian trixie's newer userland is refused by bookworm's
image before a boot and meets every need of trixie's.

Not booted here: under TCG a trixie guest (kernel 6.12) sometimes loses the first admin completion
of a controller at boot ("I/O tag N QID 0 timeout, disable controller", "probe with driver nvme
failed"): 6.12 gives the probe up where bookworm's 6.1 resets and retries, so the machine never
gets ready (1 boot in 3 in CI). Booting trixie in CI waits for that to be handled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import STANDIN, tbctl
from orchestrator import image, image_shell

pytestmark = pytest.mark.vm  # builds images and a tree in an image's userland


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
    # Files only: a trixie guest loses a hot controller's first admin completion now and then (see the
    # module docstring), so no test boots one until that is handled.
    r = tbctl(tmp_path, "spdk", "check", "--spdk-dir", str(tree), "--image", "trixie-spdk", "--no-start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every library and symbol version the apps need is in image trixie-spdk" in r.stdout
