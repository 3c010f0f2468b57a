"""Where an orderly removal stopped, from QEMU's ACPI hotplug trace: a sample from a real run
(QEMU 7.2.22, SPDK's hotplug app on uio_pci_generic) whose last device_del never got its
DEVICE_DELETED, and the stages before it (prefixes of the same trace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.report.acpi_hotplug import last_unplug

SAMPLE = (Path(__file__).parent / "acpi_traces" / "qemu72-ejected-no-device-deleted.txt").read_text().splitlines()
LAST_REQUEST = max(i for i, ln in enumerate(SAMPLE) if ln.startswith("acpi_pci_unplug_request"))


def stage(lines: list[str]) -> tuple[bool, bool, bool, bool]:
    u = last_unplug("\n".join(lines))
    return u.requested, u.read, u.ejected, u.unrealized


def test_ejected_and_unrealized_but_never_deleted_is_qemus() -> None:
    assert stage(SAMPLE) == (True, True, True, True)
    assert "stuck inside QEMU" in last_unplug("\n".join(SAMPLE)).describe()


@pytest.mark.parametrize("extra, expected, words", [
    (1, (True, False, False, False), "never read it"),  # the request, nothing from the guest yet
    (4, (True, False, False, False), "never read it"),  # the guest read the other bus's register only
    (7, (True, True, False, False), "never ejected"),  # the slot's bit read, no _EJ0
    (9, (True, True, True, False), "did not unrealize"),
])
def test_each_stage_before(extra: int, expected: tuple[bool, ...], words: str) -> None:
    lines = SAMPLE[:LAST_REQUEST + extra]
    assert stage(lines) == expected
    assert words in last_unplug("\n".join(lines)).describe()


def test_no_request_and_a_backend_prefix() -> None:
    assert stage(["acpi_pci_up_read 1"]) == (False, False, False, False)
    prefixed = [f"4242@1796321285.108018:{ln}" for ln in SAMPLE]
    assert stage(prefixed) == (True, True, True, True)
