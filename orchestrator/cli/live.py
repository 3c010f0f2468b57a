"""The VMs up now, from the registry alone (orphans reaped first): what the commands that reach a
live VM (ssh, qmp, inject, down, ...) look it up by."""

from __future__ import annotations

from orchestrator.errors import ConfigError
from orchestrator.vm import registry


def live_record(name: str) -> registry.Record:
    """The registry record of the running VM `name` (orphans reaped first); else one line."""
    registry.reap()
    rec = registry.load(name)
    if rec is None or not rec.qemu_alive():
        known = ", ".join(r.name for r in registry.records()) or "none"
        raise ConfigError(f"no running VM named {name!r} (running: {known})")
    return rec


def running() -> list[registry.Record]:
    """The VMs up now (orphans reaped first)."""
    registry.reap()
    return [r for r in registry.records() if r.qemu_alive()]
