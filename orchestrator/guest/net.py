"""A guest's NICs on a bed's networks: found by MAC address, given their static IPv4 address."""

from __future__ import annotations

import shlex

from orchestrator.guest.ssh import SSH

_FIND = ("for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && dev=${{d##*/}}; done; "
         "[ -n \"${{dev:-}}\" ] || {{ echo no NIC with MAC {mac} >&2; exit 1; }}; ")


def device(ssh: SSH, mac: str, timeout: float = 20) -> str:
    """The guest's name of the NIC with MAC `mac`."""
    return ssh.run(_FIND.format(mac=shlex.quote(mac)) + 'echo "$dev"', timeout=timeout, check=True).stdout.strip()


def address(ssh: SSH, mac: str, cidr: str, timeout: float = 20) -> str:
    """Give the NIC with MAC `mac` the address `cidr` and bring it up; returns its name."""
    return ssh.run(_FIND.format(mac=shlex.quote(mac)) + f"ip addr replace {shlex.quote(cidr)} dev \"$dev\" && "
                   "ip link set \"$dev\" up && echo \"$dev\"", timeout=timeout, check=True).stdout.strip()


def reachable(ssh: SSH, ip: str, timeout: float = 10) -> bool:
    """Does `ip` answer a ping from this guest within `timeout` seconds?"""
    return ssh.run(f"busybox ping -c 1 -W {max(1, int(timeout))} {shlex.quote(ip)}", timeout=timeout + 5).ok
