"""Which machines a test used, and where each of their logs stood when it got them: a test's
artifacts and crash reports are its own slice of a machine's console, QMP events and guest
commands, not what earlier tests left there."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.session import run_of
from orchestrator.machines import Machine


@dataclass(frozen=True)
class Slice:
    machine: Machine
    console_mark: int
    qmp_mark: int
    commands_mark: int  # bytes of commands.log


_SLICES = pytest.StashKey[list[Any]]()
_DIR = pytest.StashKey[Path]()


def use(item: pytest.Item, m: Machine) -> Machine:
    """Hand `m` to the test `item`, remembering where each of its logs stands now."""
    qmp = m.qmp_channel
    item.stash.setdefault(_SLICES, []).append(Slice(
        m, m.console.mark() if m.console else 0, qmp.mark() if qmp else 0, _size(m.artifacts / "commands.log")))
    return m


def forget(item: pytest.Item) -> None:
    """A new attempt of the test: no machines yet, a directory of its own."""
    keys: tuple[pytest.StashKey[Any], ...] = (_SLICES, _DIR)
    for key in keys:
        if key in item.stash:
            del item.stash[key]


def of(item: pytest.Item) -> list[Slice]:
    return item.stash.get(_SLICES, [])


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def since(log: Path, mark: int) -> bytes:
    """What `log` got from offset `mark` on."""
    if not log.exists():
        return b""
    with open(log, "rb") as f:
        f.seek(mark)
        return f.read()


def test_dir(item: pytest.Item) -> Path:
    """The test's own artifacts directory (made on first use)."""
    if _DIR not in item.stash:
        mod = Path(str(item.fspath)).stem
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid.split("::", 1)[-1])[:120]
        attempt = getattr(item, "execution_count", 1) or 1  # pytest-rerunfailures' count, on a retry
        safe += f"-attempt-{attempt}" if attempt > 1 else ""
        item.stash[_DIR] = run_of(item.config).settings.artifacts / mod / safe
        item.stash[_DIR].mkdir(parents=True, exist_ok=True)
    return item.stash[_DIR]


def has_dir(item: pytest.Item) -> bool:
    return _DIR in item.stash
