"""Every fault kind, in one table: `tbctl inject`, the marker faults of a run (`--fault`) and
`tbctl list --faults` read it. A new fault is its module (the injector, and its KINDS rows) and
one entry here."""

from __future__ import annotations

from orchestrator.errors import ConfigError
from orchestrator.faults import aer, hotplug, media, namespace, nic, registers, reset, smart, stall, stop
from orchestrator.faults.kind import Kind

KINDS: dict[str, Kind] = {k.name: k for module in (hotplug, registers, reset, smart, media, stall, aer, namespace, nic, stop) for k in module.KINDS}


def kind(name: str, where: str) -> Kind:
    """The kind named `name`; a name not in the table is one ConfigError naming `where`."""
    if name not in KINDS:
        raise ConfigError(f"{where}: no fault {name!r}; faults: {', '.join(KINDS)}")
    return KINDS[name]


def parse(words: list[str], where: str) -> tuple[Kind, dict[str, str]]:
    """A fault as `tbctl inject` takes it after the VM's name (KIND ARGS...): its kind and arguments."""
    if not words:
        raise ConfigError(f"{where}: no fault named; faults: {', '.join(KINDS)}")
    k = kind(words[0], where)
    return k, k.parse(words[1:], where)


def listing() -> str:
    """The table as `tbctl list --faults` prints it: each kind's usage and what it does."""
    return "\n".join(f"{k.usage()}\n    {k.help}" for k in KINDS.values())
