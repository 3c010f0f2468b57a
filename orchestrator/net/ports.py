"""Loopback ports: QEMU's host forwards (SSH) and the two ends of each network between machines."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A currently free loopback port. QEMU may still lose it to a race: its launch retries."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A currently free loopback UDP port (one end of a `dgram` netdev)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
