"""Host-side register access through QEMU's qtest socket: MMIO and PCI config space, bypassing
the guest entirely (so a fault lands even when the guest is busy, stuck or has no driver bound).

The protocol is line based ("writel ADDR VAL" -> "OK", "readl ADDR" -> "OK VAL"); every command
has a deadline.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import DeadlineError, MachineError

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC


def _config_addr(bdf: str, offset: int) -> int:
    """Type 1 configuration address for "0000:BB:DD.F" + register offset."""
    _, bus, devfn = bdf.split(":")
    dev, fn = devfn.split(".")
    return 0x80000000 | int(bus, 16) << 16 | int(dev, 16) << 11 | int(fn, 16) << 8 | (offset & 0xFC)


def _ecam(base: int, bdf: str, offset: int) -> int:
    """PCI Express enhanced configuration address of "0000:BB:DD.F" + register offset."""
    _, bus, devfn = bdf.split(":")
    dev, fn = devfn.split(".")
    return base + (int(bus, 16) << 20 | int(dev, 16) << 15 | int(fn, 16) << 12 | offset)


def mmconfig_base(qmp_execute: Callable[..., Any]) -> int | None:
    """Where the q35 host bridge maps config space (its MCFG property, set by the firmware);
    None on a machine without it, or before the firmware set it."""
    try:
        base = int(qmp_execute("qom-get", {"path": "/machine/q35", "property": "MCFG"}))
    except (MachineError, ValueError, TypeError):
        return None
    return base if 0 < base < (1 << 64) - 1 else None


class QTest:
    def __init__(self, path: Path, timeout: float = 5.0, lost: Callable[[str], MachineError] | None = None):
        """`lost`: the error for a command QEMU's exit cut short (its owner knows whether QEMU died)."""
        self.path, self.timeout = path, timeout
        self._lost = lost or (lambda what: MachineError(f"{what}: QEMU closed the socket"))
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as e:
            self._sock.close()
            raise MachineError(f"qtest socket {path}: {e} (start the machine with qtest = true)") from None
        self._buf = b""

    def _cmd(self, line: str) -> str:
        try:
            self._sock.sendall(line.encode() + b"\n")
            while b"\n" not in self._buf:
                chunk = self._sock.recv(4096)
                if not chunk:
                    raise self._lost(f"qtest {line!r}")
                self._buf += chunk
        except TimeoutError:
            raise DeadlineError(f"qtest {line!r}: no answer within {self.timeout:g} s") from None
        except OSError:  # the socket's other end went away mid-command
            raise self._lost(f"qtest {line!r}") from None
        reply, self._buf = self._buf.split(b"\n", 1)
        text = reply.decode()
        if not text.startswith("OK"):
            raise MachineError(f"qtest {line!r}: {text}")
        return text[2:].strip()

    def writel(self, addr: int, value: int) -> None:
        self._cmd(f"writel {addr:#x} {value:#x}")

    def readl(self, addr: int) -> int:
        return int(self._cmd(f"readl {addr:#x}"), 16)

    def read(self, addr: int, size: int) -> bytes:
        """`size` bytes of the guest's physical memory (or MMIO) at `addr`."""
        return bytes.fromhex(self._cmd(f"read {addr:#x} {size:#x}").removeprefix("0x"))

    def config_read16(self, bdf: str, offset: int, mcfg: int | None = None) -> int:
        """A config register: one access to its ECAM address when the machine has MMCONFIG (`mcfg`,
        see `mmconfig_base`); else through ports 0xCF8/0xCFC, whose address latch the guest's own
        config accesses share, so a guest access in between can redirect this one."""
        if mcfg is not None:
            return int(self._cmd(f"readw {_ecam(mcfg, bdf, offset):#x}"), 16)
        self._cmd(f"outl {CONFIG_ADDRESS:#x} {_config_addr(bdf, offset):#x}")
        return int(self._cmd(f"inw {CONFIG_DATA + (offset & 2):#x}"), 16)

    def config_write16(self, bdf: str, offset: int, value: int, mcfg: int | None = None) -> None:
        if mcfg is not None:
            self._cmd(f"writew {_ecam(mcfg, bdf, offset):#x} {value:#x}")
            return
        self._cmd(f"outl {CONFIG_ADDRESS:#x} {_config_addr(bdf, offset):#x}")
        self._cmd(f"outw {CONFIG_DATA + (offset & 2):#x} {value:#x}")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QTest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
