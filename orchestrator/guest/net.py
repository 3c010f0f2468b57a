"""A guest's NICs on a bed's networks: found by MAC address, given their static IPv4 address."""

from __future__ import annotations

import shlex

from orchestrator.guest.ssh import SSH


def address(ssh: SSH, mac: str, cidr: str, timeout: float = 20) -> str:
    """Give the NIC with MAC `mac` the address `cidr` and bring it up; returns its name."""
    q = shlex.quote
    res = ssh.run(f"for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {q(mac)} ] && dev=${{d##*/}}; done; "
                  f"[ -n \"$dev\" ] || {{ echo no NIC with MAC {q(mac)} >&2; exit 1; }}; "
                  f"ip addr replace {q(cidr)} dev \"$dev\" && ip link set \"$dev\" up && echo \"$dev\"",
                  timeout=timeout, check=True)
    return res.stdout.strip()


def reachable(ssh: SSH, ip: str, timeout: float = 10) -> bool:
    """Does `ip` answer a ping from this guest within `timeout` seconds?"""
    return ssh.run(f"busybox ping -c 1 -W {max(1, int(timeout))} {shlex.quote(ip)}", timeout=timeout + 5).ok
