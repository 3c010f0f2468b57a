"""`tbctl image shell`: the image's userland on the host, read-only, with the user's directories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator import image
from orchestrator.errors import ConfigError, DeadlineError
from orchestrator.image import shell as image_shell


def shell(img: image.Image, bind: Path, script: str, timeout: float = 60) -> int:
    return image_shell.run(img, [bind], ["sh", "-c", script], timeout)


def test_the_bind_is_the_cwd_and_writable_the_image_is_not(guest_image: image.Image, tmp_path: Path) -> None:
    rc = shell(guest_image, tmp_path, "pwd > where; cat /etc/hostname > hostname; touch /usr/x 2> usr.err; "
                                      "tail -n +3 /proc/net/dev | cut -d: -f1 > nets; echo ok > /tmp/scratch && cat /tmp/scratch > tmp")
    assert rc == 0
    assert (tmp_path / "where").read_text().strip() == str(tmp_path)
    assert (tmp_path / "hostname").read_text().strip() == "tbvm"  # the image's file, not the host's
    assert "Read-only file system" in (tmp_path / "usr.err").read_text()
    assert (tmp_path / "nets").read_text().split() == ["lo"]  # no network
    assert (tmp_path / "tmp").read_text().strip() == "ok"
    assert not (guest_image.root / "usr/x").exists()


def test_exit_status_passes_through_and_no_mount_outlives_it(guest_image: image.Image, tmp_path: Path) -> None:
    before = Path("/proc/self/mountinfo").read_text()
    assert shell(guest_image, tmp_path, "exit 7") == 7
    assert Path("/proc/self/mountinfo").read_text() == before


def test_a_command_past_its_deadline_is_killed_with_what_it_started(guest_image: image.Image, tmp_path: Path) -> None:
    marker = f"3{os.getpid()}.5"  # this test's own: never mistake another run's sleep for ours
    with pytest.raises(DeadlineError, match="did not finish within 1 s; killed"):
        shell(guest_image, tmp_path, f"sleep {marker} & sleep {marker}", timeout=1)
    deadline = time.monotonic() + 5  # SIGKILLed; gone once the kernel has torn them down
    while subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the sandbox's processes outlived its deadline"
        time.sleep(0.05)


def test_a_bind_beneath_a_directory_of_the_image_keeps_the_rest_of_it(guest_image: image.Image) -> None:
    """/usr/local becomes a tmpfs holding the image's own /usr/local entries, so the bind's mount
    point can be made on a read-only image, and the image's files there stay visible."""
    tree = Path(tempfile.mkdtemp(prefix="tbctl-test-", dir="/usr/local/src"))
    try:
        (tree / "probe").write_text("x")
        assert shell(guest_image, tree, "cat probe > seen; ls /usr/local > listing; touch /usr/local/y 2>/dev/null; "
                                        "test ! -e /usr/local/y") == 0
        assert (tree / "seen").read_text() == "x"
        assert set((tree / "listing").read_text().split()) >= {"bin", "lib", "src"}
    finally:
        shutil.rmtree(tree)


def test_bad_binds_are_refused(guest_image: image.Image, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--bind .*: not a directory"):
        image_shell.argv(guest_image, [tmp_path / "nope"], ["true"], None)
    with pytest.raises(ConfigError, match="--bind /proc/self: not allowed"):
        image_shell.argv(guest_image, [Path("/proc/self")], ["true"], None)


def test_cli_image_shell_runs_a_command(guest_image: image.Image, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "image", "shell", "--bind", str(tmp_path), "--",
                        "sh", "-c", "echo hi > f; exit 3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and (tmp_path / "f").read_text() == "hi\n"
