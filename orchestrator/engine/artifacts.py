"""Every test, passed or not, leaves its slice of each machine's console, QMP events and guest
commands, plus the guest's dmesg, in its own artifacts directory."""

from __future__ import annotations

import json

import pytest

from orchestrator.engine import slices
from orchestrator.errors import TbctlError


def collect(item: pytest.Item) -> None:
    used = slices.of(item)
    if not used:
        return
    d = slices.test_dir(item)
    for i, s in enumerate(used):
        m, sfx = s.machine, "" if len(used) == 1 else f"-{i}"
        if m.console is not None:
            (d / f"console{sfx}.log").write_text(m.console.text[s.console_mark:])
        if m.qmp_channel is not None:
            events = m.qmp_channel.events(s.qmp_mark)
            (d / f"qmp-events{sfx}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        if (m.artifacts / "commands.log").exists():
            (d / f"commands{sfx}.log").write_bytes(slices.since(m.artifacts / "commands.log", s.commands_mark))
        (d / f"vm{sfx}.txt").write_text(f"{m.name}: full logs in {m.artifacts}\n")
        try:
            if not m.qemu_alive() or m.ssh_channel is None:
                raise TbctlError("the VM was already shut down or killed (console.log has what it printed)")
            (d / f"dmesg{sfx}.txt").write_text(m.ssh_channel.run("dmesg", timeout=15).stdout)
        except TbctlError as e:
            (d / f"dmesg{sfx}.txt").write_text(f"dmesg unavailable: {e}\n")
