"""Event waits of the QMP wrapper (the wire side is exercised by the VM tests)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import DeadlineError
from orchestrator.vm.qmp import QMP


def test_wait_event_matches_data_and_honours_cursor_and_deadline(tmp_path: Path) -> None:
    q = QMP(tmp_path / "none.sock", tmp_path / "events.jsonl")
    try:
        q._record({"event": "DEVICE_DELETED", "data": {"device": "nvme0"}})
        mark = q.mark()
        with pytest.raises(DeadlineError, match='DEVICE_DELETED {"device": "nvme0"} did not come within 0.2 s'):
            q.wait_event("DEVICE_DELETED", {"device": "nvme0"}, timeout=0.2, after=mark)
        threading.Timer(0.1, q._record, [{"event": "DEVICE_DELETED", "data": {"device": "nvme1"}}]).start()
        threading.Timer(0.2, q._record, [{"event": "DEVICE_DELETED", "data": {"device": "nvme0"}}]).start()
        t0 = time.monotonic()
        ev = q.wait_event("DEVICE_DELETED", {"device": "nvme0"}, timeout=5, after=mark)
        assert ev["data"]["device"] == "nvme0" and time.monotonic() - t0 < 2
        assert q.wait_event("DEVICE_DELETED", {"device": "nvme0"}, timeout=0.1)["host_time"] < ev["host_time"]
    finally:
        q.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"device": "nvme1"' in lines[1]


def test_connect_to_missing_socket_fails_at_the_deadline(tmp_path: Path) -> None:
    q = QMP(tmp_path / "none.sock", None)
    try:
        t0 = time.monotonic()
        with pytest.raises(DeadlineError, match="not connectable within 0.5 s"):
            q.connect(0.5)
        assert time.monotonic() - t0 < 3
    finally:
        q.close()
