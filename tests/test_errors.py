"""Errors keep what happened as fields (results.json's `error` of a failed test), not only words."""

from __future__ import annotations

from orchestrator.errors import DeadlineError, MachineError, QMPError, TbctlError


def test_an_errors_fields_are_its_kind_and_every_part_it_has() -> None:
    e = QMPError("QMP device_del: GenericError: Device 'nvme9' not found", command="device_del",
                 arguments={"id": "nvme9"}, error_class="GenericError", desc="Device 'nvme9' not found")
    e.machine, e.stage = "vm-1", "NVMe controllers hot-added"
    assert e.fields() == {"kind": "QMPError", "command": "device_del", "arguments": "{'id': 'nvme9'}",
                          "error_class": "GenericError", "desc": "Device 'nvme9' not found", "machine": "vm-1",
                          "stage": "NVMe controllers hot-added"}
    assert DeadlineError("x", what="ssh", seconds=60).fields() == {"kind": "DeadlineError", "what": "ssh", "seconds": 60}
    assert MachineError("plain").fields() == {"kind": "MachineError"}  # none set, none shown
    assert TbctlError().machine is None and len(str(DeadlineError("x", what="o" * 5000).fields()["what"])) == 2000
