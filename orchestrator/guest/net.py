"""A guest's NICs on a bed's networks: found by MAC address, given their static IPv4 address."""

from __future__ import annotations

import shlex
import time

from orchestrator.errors import CommandFailed
from orchestrator.guest.ssh import SSH

_FIND = ("for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && dev=${{d##*/}}; done; "
         "[ -n \"${{dev:-}}\" ] || {{ echo no NIC with MAC {mac} >&2; exit 1; }}; ")


def find(mac: str) -> str:
    """Shell that sets $dev to the guest's name of the NIC with MAC `mac` (exits 1 without one)."""
    return _FIND.format(mac=shlex.quote(mac))


def device(ssh: SSH, mac: str, timeout: float = 20) -> str:
    """The guest's name of the NIC with MAC `mac`."""
    return ssh.run(find(mac) + 'echo "$dev"', timeout=timeout, check=True).stdout.strip()


def address(ssh: SSH, mac: str, cidr: str, timeout: float = 20) -> str:
    """Give the NIC with MAC `mac` the address `cidr` and bring it up; returns its name."""
    return ssh.run(find(mac) + f"ip addr replace {shlex.quote(cidr)} dev \"$dev\" && "
                   "ip link set \"$dev\" up && echo \"$dev\"", timeout=timeout, check=True).stdout.strip()


def address_when_probed(ssh: SSH, mac: str, cidr: str, timeout: float) -> str:
    """`address` of a NIC just plugged in: retried until the guest's driver has probed it (it has
    no name before), failing at `timeout` with the guest's own word."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return address(ssh, mac, cidr, timeout=max(1.0, deadline - time.monotonic()))
        except CommandFailed:  # no NIC with that MAC yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def carrier(ssh: SSH, mac: str, up: bool, timeout: float = 20) -> str:
    """Wait until the guest's NIC with MAC `mac` has (`up`) or has lost its carrier: QEMU's
    set_link returns at once, and the guest's link watch sees the change up to seconds later under
    TCG. Returns the NIC's name; fails at `timeout` if the guest never saw it."""
    want = "1" if up else "0"
    tries = max(1, int(timeout * 5))
    return ssh.run(find(mac) +
                   f'for i in $(seq {tries}); do [ "$(cat "/sys/class/net/$dev/carrier" 2>/dev/null)" = {want} ] '
                   '&& { echo "$dev"; exit 0; }; sleep 0.2; done; '
                   f'echo "$dev: carrier still $(cat "/sys/class/net/$dev/carrier" 2>&1) after {timeout:g} s" >&2; '
                   'exit 1', timeout=timeout + 10, check=True).stdout.strip()


def pci_remove(ssh: SSH, mac: str, timeout: float = 60) -> str:
    """Remove the NIC with MAC `mac` from the guest's PCI bus, as SPDK's device_removal.sh does
    (`echo 1 > .../remove`: the guest tears it down, QEMU keeps the device); returns its PCI address.
    A guest that cannot let go blocks here, until `timeout`."""
    return ssh.run(find(mac) +
                   'd=$(readlink -f "/sys/class/net/$dev/device"); '
                   'while [ ! -e "$d/remove" ] && [ "$d" != / ]; do d=${d%/*}; done; '  # virtio's PCI parent
                   '[ -e "$d/remove" ] || { echo "$dev is on no PCI device" >&2; exit 1; }; '
                   'echo 1 > "$d/remove" && echo "${d##*/}"', timeout=timeout, check=True).stdout.strip()


def pci_rescan(ssh: SSH, timeout: float = 30) -> None:
    """Let the guest find what is on its PCI bus again (a NIC it removed comes back)."""
    ssh.run("echo 1 > /sys/bus/pci/rescan", timeout=timeout, check=True)


def reachable(ssh: SSH, ip: str, timeout: float = 10) -> bool:
    """Does `ip` answer a ping from this guest within `timeout` seconds?"""
    return ssh.run(f"busybox ping -c 1 -W {max(1, int(timeout))} {shlex.quote(ip)}", timeout=timeout + 5).ok
