"""Errors keep what happened as fields (results.json's `error` of a failed test), not only words."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError, DeadlineError, MachineError, QMPError, TbctlError
from orchestrator.faults import registers
from orchestrator.guest import nvme


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


def test_a_fault_or_binding_asked_for_wrongly_is_bad_input_before_any_machine_is_touched() -> None:
    """A doorbell kind, register path or driver that does not exist is the caller's mistake
    (ConfigError: a usage error, exit 2), not a machine that broke; nothing is reached first."""
    for call, words in [(lambda: registers.invalid_doorbell(None, "nvme0", "sq-way-off"),  # type: ignore[arg-type]
                         "doorbell kind 'sq-way-off': must be one of sq-nonexistent, "),
                        (lambda: registers.Registers(None, "nvme0", "bus"),  # type: ignore[arg-type]
                         "via 'bus': must be one of host, guest"),
                        (lambda: nvme.bind(None, ["0000:01:00.0"], "igb_uio"),  # type: ignore[arg-type]
                         "driver 'igb_uio': must be one of nvme, uio_pci_generic, vfio-pci")]:
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value).startswith(words)
