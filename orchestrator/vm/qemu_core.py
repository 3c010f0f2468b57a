"""QEMU's own core dump, read without touching the host's core_pattern.

QEMU runs with RLIMIT_CORE raised and its private run directory as working directory, with
`dump-guest-core=off` (guest RAM stays out: ~20 MB instead of the guest's size). When the host's
core_pattern writes plain files there (Debian's default "core"), a QEMU that died of a signal
leaves one; gdb reads its backtraces and the core is removed. With another core_pattern (a pipe
to systemd-coredump, an absolute path) there is no core here, and the crash is told from the
signal, QEMU's stderr and the last QMP commands instead.
"""

from __future__ import annotations

import re
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

GDB_TIMEOUT = 120.0
_MAPPING = re.compile(r"^\s*0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$", re.M)
_FRAME = re.compile(r"^#\d+\s+(?:0x([0-9a-f]+) in )?(\S+) \(", re.M)


def allow_cores() -> None:
    """Popen preexec_fn for QEMU: the soft core limit up to the hard one (no privilege needed)."""
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def find(run_dir: Path, pid: int | None) -> Path | None:
    """The core QEMU `pid` left in its run directory, if the host's core_pattern put one there."""
    for name in ("core", f"core.{pid}"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


@dataclass(frozen=True)
class Frame:
    name: str  # "??" when the binary has no symbol for it
    where: str  # "qemu-system-x86_64+0x97e694": the file and the offset in it
    own: bool  # in QEMU's binary or one of its modules (not libc, glib, ...)


def backtrace(binary: Path, core: Path) -> str:
    """gdb's view of the core: the crashing thread, every thread, and the mapped files."""
    return _gdb(["-ex", "bt", "-ex", "thread apply all bt", "-ex", "info proc mappings", str(binary), str(core)])


def live_backtrace(pid: int) -> str:
    """Every thread of a QEMU that still runs but is stuck (gdb attaches, reads, detaches: QEMU goes on)."""
    return _gdb(["-ex", "thread apply all bt", "-p", str(pid)])


def _gdb(args: list[str]) -> str:
    cmd = ["gdb", "-batch", "-nx", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=GDB_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return "gdb is not installed: no backtrace"
    except subprocess.TimeoutExpired:
        return f"gdb did not finish within {GDB_TIMEOUT:g} s and was killed"
    return r.stdout + r.stderr


def crashing_frames(text: str, binary: Path) -> list[Frame]:
    """The frames of the thread the signal killed (gdb's first `bt`), placed in their files."""
    maps = [(int(a, 16), int(b, 16), int(off, 16), path) for a, b, off, path in _MAPPING.findall(text)]
    bases = {path: start for start, _, off, path in maps if off == 0}
    first = text.split("\nThread ", 1)[0]  # `bt` comes before `thread apply all bt`
    first = first.split("[Current thread is", 1)[-1]  # gdb shows frame #0 once more on loading the core
    frames = []
    for m in _FRAME.finditer(first):
        addr = int(m.group(1), 16) if m.group(1) else None
        path = next((p for start, end, _, p in maps if addr is not None and start <= addr < end), None)
        if path is None:
            frames.append(Frame(m.group(2), "?", False))
            continue
        own = Path(path).name == binary.name or "/qemu/" in path
        frames.append(Frame(m.group(2), f"{Path(path).name}+{addr - bases.get(path, 0):#x}", own))  # type: ignore[operator]
    return frames
