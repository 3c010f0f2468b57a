"""The QEMU-only reproducer of QEMU's unplug bugs under a userspace driver (suites/userspace_unplug.py):
tbctl's own polled driver reads from a controller on uio_pci_generic while device_del takes it
away. On QEMU 7.2 and 10.0 QEMU at times crashes or never frees the device: each ends titled, a
known failure with tbctl's list; otherwise every cycle's driver saw its controller go."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import tbctl


@pytest.mark.vm
def test_the_reproducer_runs_with_qemu_and_the_guest_image_alone(tmp_path: Path) -> None:
    r = tbctl(tmp_path, "run", "userspace_unplug", "--json", str(tmp_path / "r.json"))  # the project's known failures
    (t,) = json.loads((tmp_path / "r.json").read_text())["tests"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    log = (Path(t["artifacts"]).parent / "vm-1" / "commands.log").read_text()
    assert "io running" in log, log[-2000:]  # the driver's reads completed
    ended = re.findall(r"^ended: (.*)$", log, re.M)  # the driver's last word, each cycle QEMU survived
    assert all(e.startswith("controller gone") for e in ended), ended
    if t["outcome"] == "passed":
        assert len(ended) == 4, log[-3000:]
    else:  # one of QEMU's two bugs, by its title
        assert t["outcome"] == "known failure" and t["known"]["test"] == "userspace_unplug::*", t
