"""SPDK's examples/nvme/hotplug as a hotplug app the suites follow (orchestrator.guest.hotplug_app)."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.guest.hotplug_app import HotplugApp, Summary
from orchestrator.guest.ssh import SSH, Result
from orchestrator.spdk import runtime as spdk
from orchestrator.spdk.tree import Tree

_ATTACHED = re.compile(r"^Attached to (\S+)$")
_REMOVED = re.compile(r"^Controller removed: .*\((.+?)\s*\)\s*$")
_MISMATCH = re.compile(r"^Expected (inserts|removals) (-?\d+) != actual \w+ (-?\d+)$")


class SpdkHotplugApp(HotplugApp):
    """SPDK's examples/nvme/hotplug: `-i shm -t secs -n inserts -r removals`, reports on stderr.

    It names an attached controller by PCI address and a removed one by "model (serial)", and
    counts only controllers attached after its start-up probe as insertions. Its remove callback
    may run more than once for one removal (it marks the controller removed and detaches it only
    once its I/O drained; seen under vfio-pci, where the kernel's device request and the device's
    disappearance each call it): the app counts that removal once, and so does this."""

    name = "spdk"

    def __init__(self, ssh: SSH, log: Path, tree: Tree, serial_of: dict[str, str]):
        super().__init__(ssh, log)
        self.tree, self.serial_of = tree, serial_of
        self._started = False
        self._removed: set[str] = set()  # reported removed, not attached again since

    def command(self, inserts: int, removals: int, seconds: int) -> tuple[str, bytes | None]:
        args = ["-i", "0", "-t", str(seconds), "-n", str(inserts), "-r", str(removals)]
        return spdk.command(self.tree, spdk.HOTPLUG, args), None

    def not_started(self, output: str, status: int | None) -> Exception | None:
        return spdk.not_started("SPDK hotplug app", output, status)

    def is_ready(self, line: str) -> bool:
        if line.startswith("Initialization complete"):
            self._started = True
        return self._started

    def parse(self, line: str) -> tuple[str, str] | None:
        if self._started and (m := _ATTACHED.match(line)):
            serial = self.serial_of.get(m.group(1), m.group(1))
            self._removed.discard(serial)
            return "insert", serial
        if (m := _REMOVED.match(line)) and (serial := m.group(1).strip()) not in self._removed:
            self._removed.add(serial)
            return "remove", serial
        return None

    def summary(self, result: Result) -> Summary:
        counts = {"inserts": len([e for e in self.events if e.kind == "insert"]),
                  "removals": len([e for e in self.events if e.kind == "remove"])}
        for line in result.stdout.splitlines():
            if m := _MISMATCH.match(line.strip()):
                counts[m.group(1)] = int(m.group(3))
        return Summary(result.rc, counts["inserts"], counts["removals"], result)
