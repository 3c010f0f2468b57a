"""Every malformed input tbctl reads, file, flag or argument, is one line on stderr naming what
is wrong, exit code 2, no traceback, before anything is built or booted."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Tbctl, tbctl

FILES = {
    "binary.toml": b"\xff\xfe\x00\x01binary",
    "latin1.toml": "[machine]\nname = 'caf\xe9'\n".encode("latin-1"),
    "broken.toml": b"not = [toml",
    "types.toml": b"[machine]\nmemory_mib = \"lots\"\n",
    "binary.json": b"\x89PNG\r\n\x1a\n",
    "list.json": b"[1, 2]",
}

CORPUS = [
    # files
    (["run", "sw_hotplug", "--topology", "binary.toml"], "binary.toml"),
    (["run", "sw_hotplug", "--topology", "latin1.toml"], "latin1.toml"),
    (["run", "sw_hotplug", "--topology", "broken.toml"], "broken.toml"),
    (["run", "sw_hotplug", "--topology", "types.toml"], "machine.memory_mib"),
    (["run", "sw_hotplug", "--topology", "missing.toml"], "missing.toml"),
    (["run", "sw_hotplug", "--bed", "binary.toml"], "binary.toml"),
    (["run", "sw_hotplug", "--bed", "broken.toml"], "broken.toml"),
    (["run", "sw_hotplug", "--expunge", "latin1.toml"], "latin1.toml"),
    (["run", "--all", "--durations", "binary.json"], "--durations binary.json"),
    (["run", "--all", "--durations", "list.json"], "--durations list.json"),
    (["repro", "sw_hotplug", "-n", "1", "--bed", "binary.toml"], "binary.toml"),
    (["up", "--topology", "binary.toml"], "binary.toml"),
    (["up", "--bed", "broken.toml"], "broken.toml"),
    (["merge", "binary.json"], "binary.json"),
    (["report", "list.json"], "list.json"),
    (["spdk", "check", "--spdk-dir", "binary.toml"], "--spdk-dir"),
    # numbers out of range, not numbers, not finite
    (["run", "sw_hotplug", "--timeout", "-5"], "--timeout"),
    (["run", "sw_hotplug", "--timeout", "nan"], "--timeout"),
    (["run", "sw_hotplug", "--timeout", "inf"], "--timeout"),
    (["run", "sw_hotplug", "--jitter", "-1"], "--jitter"),
    (["run", "sw_hotplug", "--seed", "-1"], "--seed"),
    (["run", "sw_hotplug", "--retries", "x"], "--retries"),
    (["run", "--all", "--shard", "3/2"], "--shard"),
    (["repro", "sw_hotplug", "-n", "0"], "--runs"),
    (["repro", "sw_hotplug", "-n", "1", "--jobs", "0"], "--jobs"),
    (["up", "--boot-timeout", "0"], "--boot-timeout"),
    (["merge", "list.json", "--slower", "-1"], "--slower"),
    (["ci-template", "k8s", "--shards", "0"], "--shards"),
    (["image", "build", "--mirror", "::bad"], "--mirror"),
    # places a run writes, checked before anything boots
    (["run", "sw_hotplug", "--json", "."], "--json"),
    (["run", "sw_hotplug", "--junit", "nodir/out.xml"], "--junit"),
    (["run", "sw_hotplug", "--html", "binary.toml/x.html"], "--html"),
    (["merge", "list.json", "--json", "nodir/m.json"], "--json"),
    (["report", "list.json", "-o", "."], "--html"),
    (["ci-template", "k8s", "-o", "nodir/job.yaml"], "--output"),
    (["ssh-config", "--write", "binary.toml/cfg"], "--write"),
    # tests that are not there
    (["run", "sw_hotplug::test_nosuch"], "test_orderly_hotplug[kernel]"),
    (["run", "sw_hotplug::test_orderly_hotplug[nosuch]"], "sw_hotplug::test_orderly_hotplug[nosuch]"),
    (["repro", "sw_hotplug::test_nosuch", "-n", "1"], "test_hotplug_under_io[kernel]"),
    # names and choices
    (["run", "nosuch"], "nosuch"),
    (["run", "spdk:test/nvme/sw_hotplug.sh"], "--spdk-dir"),
    (["run", "spdk:test/nvme/nosuch.sh", "--spdk-dir", "."], "spdk:test/nvme/nosuch.sh"),
    (["run", "spdk:../outside.sh", "--spdk-dir", "."], "spdk:../outside.sh"),
    (["repro", "spdk:test/x.py", "-n", "1", "--spdk-dir", "."], "spdk:test/x.py"),
    (["run", "spdk:test/x.sh 'unclosed", "--spdk-dir", "."], "spdk:test/x.sh 'unclosed"),
    (["run", "sw_hotplug", "--spdk-env", "NET TYPE=virt"], "--spdk-env"),
    (["run", "sw_hotplug", "--accel", "fast"], "--accel"),
    (["run", "sw_hotplug", "--image", "nosuch"], "--image"),
    (["down", "a", "--all"], "down"),
    (["ssh", "nosuch", "--", "ls"], "nosuch"),
    (["inject", "nosuch", "doorbell", "nvme0", "x"], "kind"),
    (["nosuchcommand"], "nosuchcommand"),
    (["run", "sw_hotplug", "--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize("args,names", CORPUS, ids=[" ".join(a) for a, _ in CORPUS])
def test_malformed_input_is_one_line(tmp_path: Path, tbctl_main: Tbctl, args: list[str], names: str) -> None:
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    r = tbctl_main(*args)
    lines = r.stderr.splitlines()
    assert (r.returncode, len(lines), r.stdout) == (2, 1, ""), r.stderr[-3000:]
    assert "Traceback" not in r.stderr and names in lines[0], lines
    assert not (tmp_path / "art").exists()  # nothing was started


def test_commands_with_nothing_to_do_say_so_and_exit_0(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "down", "--all")
    assert (r.returncode, r.stdout) == (0, "down --all: no VMs are up; nothing to do\n")


def test_an_artifacts_directory_that_cannot_be_made_is_one_line(tmp_path: Path, tbctl_main: Tbctl,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TBCTL_ARTIFACTS", str(tmp_path / "file" / "art"))
    r = tbctl_main("run", "sw_hotplug")
    assert (r.returncode, r.stderr.count("\n")) == (2, 1), r.stderr
    assert r.stderr.startswith(f"tbctl: $TBCTL_ARTIFACTS {tmp_path / 'file' / 'art'}: cannot be made: "), r.stderr


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """`tbctl list | head -1`: the reader went away; no traceback, the command's own status."""
    import subprocess
    import sys

    r = subprocess.run(f"{sys.executable} -m orchestrator.cli list | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}} >&2",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.stderr.strip() in ("0", str(128 + 13)) and "Traceback" not in r.stderr, r.stderr
