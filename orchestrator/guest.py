"""Guest-side operations, run over SSH as rendered scripts (no parameter reaches a shell unquoted)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import DeadlineError, MachineError
from .render import render
from .ssh import SSH


@dataclass(frozen=True)
class NvmeWait:
    ok: bool
    waited: float
    controllers: dict[str, Any]


def nvme_state(ssh: SSH, serial: str | None = None, present: bool = True, timeout: float = 10) -> NvmeWait:
    """The guest's NVMe controllers by serial; with `serial`, first wait until that controller is
    present (live, with a namespace block device) or absent."""
    script = render("guest/nvme_state.py.j2", serial=serial, present=present, timeout=timeout)
    res = ssh.run("python3 -", timeout=timeout + 10, stdin=script.encode())
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise MachineError(f"guest nvme_state helper failed (exit {res.rc}): {res.stderr.strip()[-500:]}") from None
    return NvmeWait(data["ok"], data["waited"], data["controllers"])


def wait_nvme(ssh: SSH, serial: str, present: bool, timeout: float = 10) -> NvmeWait:
    state = nvme_state(ssh, serial, present, timeout)
    if not state.ok:
        what = "appear (live, with a namespace)" if present else "disappear"
        raise DeadlineError(f"guest: NVMe controller {serial} did not {what} within {timeout:g} s; "
                            f"guest sees {json.dumps(state.controllers)}")
    return state
