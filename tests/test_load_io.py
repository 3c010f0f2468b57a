"""How a load's I/O is known to be under way (orchestrator/guest/load.py, io_moving.sh.j2)."""

from __future__ import annotations

import pytest

from orchestrator.guest import load
from orchestrator.render import render


@pytest.mark.parametrize("job, writes", [("--rw=randrw --bs=4k", True), ("--rw=write", True), ("--rw=randwrite", True),
                                         ("--rw=readwrite", True), ("--rw=read", False), ("--rw=randread --bs=4k", False)])
def test_a_load_that_writes_is_known_by_its_writes_alone(job: str, writes: bool) -> None:
    """udev's probes read a fresh namespace while fio is still setting up (seen: "moving: 3 -> 6
    I/Os", then fio's report had no I/O at all): a job that writes counts the device's completed
    writes only (field 5 of /sys/block/DEV/stat); a read-only one counts reads and writes."""
    assert bool(load._WRITES.search(job)) is writes
    script = render("guest/io_moving.sh.j2", dev="nvme1n1", pid=7, looks=3, writes_only=writes)
    assert ("n += $5 }" in script) is writes and ("n += $1 + $5 }" in script) is not writes
