"""The guest's serial console, read live from QEMU's console socket.

QEMU itself writes every byte to console.log (chardev `logfile=`), so the log survives tbctl;
this reader only lets the host react the moment a marker or a crash appears instead of polling
a file.
"""

from __future__ import annotations

import bisect
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from re import Pattern

from orchestrator.errors import DeadlineError, MachineError


class Console:
    def __init__(self, socket_path: Path, name: str = "vm", lost: Callable[[str], MachineError] | None = None):
        """`lost`: the error for a wait QEMU's exit cut short (its owner knows whether QEMU died)."""
        self.socket_path = socket_path
        self.name = name
        self._lost = lost or (lambda what: MachineError(f"{what}: console closed (QEMU exited)"))
        self._text = ""
        self._arrivals: list[tuple[int, float]] = []  # (text length after a read, host time of it)
        self._closed = False
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def connect(self, timeout: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not alive():
                raise MachineError(f"QEMU exited before its console socket {self.socket_path} was ready")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.socket_path))
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    raise DeadlineError(f"console socket {self.socket_path} not ready within {timeout:g} s: {e}") from None
                time.sleep(0.02)
        self._sock = s
        self._thread = threading.Thread(target=self._read, name=f"console-{self.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._sock is not None
        try:
            while data := self._sock.recv(65536):
                with self._cond:
                    self._text += data.decode(errors="replace").replace("\r\n", "\n")
                    self._arrivals.append((len(self._text), time.time()))
                    self._cond.notify_all()
        except OSError:
            pass
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return self._text

    @property
    def closed(self) -> bool:
        """QEMU closed the console: it is exiting (or gone)."""
        with self._cond:
            return self._closed

    def mark(self) -> int:
        with self._cond:
            return len(self._text)

    def arrived(self, offset: int) -> float | None:
        """When (host time.time()) the text at `offset` reached the host: when a report began."""
        with self._cond:
            i = bisect.bisect_right(self._arrivals, offset, key=lambda a: a[0])
            return self._arrivals[i][1] if i < len(self._arrivals) else None

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.text.rstrip("\n").splitlines()[-lines:])

    def wait_for(self, patterns: list[Pattern[str]], timeout: float, after: int = 0) -> re.Match[str]:
        """The first match of any pattern in console text from offset `after` on."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for p in patterns if (m := p.search(self._text, after))]
                if found:
                    return min(found, key=lambda m: m.start())
                if self._closed:
                    raise self._lost("console wait for " + " | ".join(p.pattern for p in patterns))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineError(f"console: none of {' | '.join(p.pattern for p in patterns)} "
                                        f"within {timeout:g} s")
                self._cond.wait(remaining)

    def close(self) -> None:
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._thread:
            self._thread.join(2)
