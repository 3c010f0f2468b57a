"""Live VMs through the real OpenSSH client: ssh and scp with tbctl ssh-config's blocks (host key
pinned, StrictHostKeyChecking yes), a written file kept in step with up/down and valid across a
restart on another port, and `tbctl ssh` with OpenSSH's own semantics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tbctl

TBCTL = [sys.executable, "-m", "orchestrator.cli"]


def ssh(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.vm
def test_openssh_scp_and_tbctl_ssh_reach_a_live_vm(tmp_path: Path) -> None:
    try:
        up = tbctl(tmp_path, "up", "--name", "sc", timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        cfg = tmp_path / "cfg"
        cfg.write_text(tbctl(tmp_path, "ssh-config").stdout)
        assert "StrictHostKeyChecking yes" in cfg.read_text() and "ForwardAgent no" in cfg.read_text()
        r = ssh("ssh", "-F", str(cfg), "tbctl-sc", "nvme", "list")
        assert r.returncode == 0 and "/dev/nvme0n1" in r.stdout, r.stderr
        (tmp_path / "up.txt").write_text("to the guest and back\n")
        assert ssh("scp", "-F", str(cfg), str(tmp_path / "up.txt"), "tbctl-sc:/tmp/up.txt").returncode == 0
        assert ssh("scp", "-F", str(cfg), "tbctl-sc:/tmp/up.txt", str(tmp_path / "back.txt")).returncode == 0
        assert (tmp_path / "back.txt").read_text() == "to the guest and back\n"

        # OpenSSH's semantics: one string for the guest's shell, exit status, stdin, -t
        r = tbctl(tmp_path, "ssh", "sc", "--", "echo a; echo b | tr a-z A-Z")
        assert (r.returncode, r.stdout) == (0, "a\nB\n"), r.stderr
        assert tbctl(tmp_path, "ssh", "sc", "--", "exit 3").returncode == 3
        r = subprocess.run([*TBCTL, "ssh", "sc", "--", "tr a-z A-Z"], input="piped\n", capture_output=True,
                           text=True, timeout=60, cwd=tmp_path)
        assert r.stdout == "PIPED\n", r.stderr
        r = subprocess.run(["script", "-qec", " ".join([*TBCTL, "ssh", "-t", "sc", "--", "tty"]), "/dev/null"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert "/dev/pts/" in r.stdout, r.stdout + r.stderr

        # a written file: through tbctl ssh-proxy, in step with up/down, valid across a restart
        written = tmp_path / "ssh" / "tbctl_config"
        assert tbctl(tmp_path, "ssh-config", "--write", str(written)).returncode == 0
        assert "ProxyCommand" in written.read_text() and "Port " not in written.read_text()
        assert ssh("ssh", "-F", str(written), "tbctl-sc", "echo via-proxy").stdout == "via-proxy\n"
        assert tbctl(tmp_path, "down", "sc").returncode == 0
        assert "Host tbctl-sc" not in written.read_text()
        assert tbctl(tmp_path, "up", "--name", "sc", timeout=300).returncode == 0
        assert "Host tbctl-sc" in written.read_text()
        assert ssh("ssh", "-F", str(written), "tbctl-sc", "echo again").stdout == "again\n"

        # a connection lasts while the VM's QEMU runs, however long the guest does not answer (paused
        # 20 s here; a keepalive of 5 s x 3 dropped such a command silently)...
        slow = subprocess.Popen([*TBCTL, "ssh", "sc", "--", "echo started; sleep 2; echo done"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert slow.stdout is not None and slow.stdout.readline() == "started\n"
        assert tbctl(tmp_path, "inject", "sc", "vm-pause").returncode == 0
        time.sleep(20)
        assert tbctl(tmp_path, "inject", "sc", "vm-resume").returncode == 0
        out, err = slow.communicate(timeout=60)
        assert (slow.returncode, out) == (0, "done\n"), err
        # ...and when QEMU goes, one line says so, with OpenSSH's 255
        long = subprocess.Popen([*TBCTL, "ssh", "sc", "--", "echo started; sleep 600"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert long.stdout is not None and long.stdout.readline() == "started\n"
        pid = json.loads(tbctl(tmp_path, "status", "--json").stdout)[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        _, err = long.communicate(timeout=60)
        assert long.returncode == 255 and "tbctl ssh: sc: its QEMU exited while the connection was open" in err, err
    finally:
        tbctl(tmp_path, "down", "--all")
