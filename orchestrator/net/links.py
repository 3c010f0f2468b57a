"""The ends of a bed's networks: each network is a QEMU `dgram` netdev pair on 127.0.0.1, one UDP
port per machine, each sending to the other's."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.bed import Bed
from orchestrator.net.ports import free_udp_port


@dataclass(frozen=True)
class Link:
    local: int  # the UDP port this machine's NIC listens on
    remote: int  # its peer's


def allocate(bed: Bed) -> dict[str, dict[str, Link]]:
    """role -> NIC id -> its link. Ports are free now; QEMU may still lose one to a race (the
    bed's boot then allocates again)."""
    out: dict[str, dict[str, Link]] = {role: {} for role in bed.machines}
    for name in bed.networks:
        (role_a, nic_a), (role_b, nic_b) = bed.peers(name)
        a, b = free_udp_port(), free_udp_port()
        while b == a:
            b = free_udp_port()
        out[role_a][nic_a.id], out[role_b][nic_b.id] = Link(a, b), Link(b, a)
    return out
