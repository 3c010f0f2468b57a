"""Beds: several machines, by role, joined by networks; one TOML file, validated before anything boots.

    [bed]
    name = "nvmf"                      # optional
    [machines.target]                  # a role: its table is a topology (machine, nvme, nic)
    machine = { memory_mib = 1024 }
    nvme = [{ id = "nvme0", serial = "TGT0001" }]
    nic = [{ network = "fabric", address = "10.0.0.1/24" }]
    [machines.host]
    nic = [{ network = "fabric", address = "10.0.0.2/24" }]
    [networks.fabric]                  # carried by QEMU netdevs on loopback only
    kind = "dgram"

A network joins exactly two machines, point to point, through a QEMU `dgram` netdev on 127.0.0.1
(no bridge, no tap, nothing that reaches the host's network); unlike a `stream` client in QEMU
7.2, it carries on when its peer restarts. A one-machine topology file is a bed of one machine,
role `default`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import topology
from orchestrator.config.topology import Nic, Topology
from orchestrator.errors import ConfigError

KINDS = ("dgram",)
MAX_MACHINES = 4
DEFAULT_ROLE = "default"
_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")


@dataclass(frozen=True)
class Network:
    name: str
    kind: str = "dgram"


@dataclass(frozen=True)
class Bed:
    name: str
    machines: dict[str, Topology]  # by role, in the file's order
    networks: dict[str, Network] = field(default_factory=dict)
    source: str = "<built-in>"

    def machine(self, role: str) -> Topology:
        if role not in self.machines:
            raise ConfigError(f"bed {self.name} ({self.source}) has no machine {role!r}; "
                              f"roles: {', '.join(self.machines)}")
        return self.machines[role]

    def peers(self, network: str) -> list[tuple[str, Nic]]:
        """The (role, NIC) pairs on `network`, in role order."""
        return [(role, n) for role, t in self.machines.items() for n in t.nics if n.network == network]


def of(topo: Topology) -> Bed:
    """The bed of one machine: any topology."""
    return Bed(topo.name, {DEFAULT_ROLE: topo}, {}, topo.source)


def load(path: str | Path) -> Bed:
    """A bed file, or a one-machine topology file (no `machines` table)."""
    path = Path(path)
    data = topology.read_toml(path, "bed")
    return parse(data, str(path)) if "machines" in data else of(topology.parse(data, str(path)))


def parse(data: dict[str, Any], source: str) -> Bed:
    unknown = sorted(set(data) - {"bed", "machines", "networks"})
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown field; allowed: bed, machines, networks")
    meta, machines, networks = data.get("bed", {}), data.get("machines"), data.get("networks", {})
    for key, value in (("bed", meta), ("machines", machines), ("networks", networks)):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: must be a table")
    if set(meta) - {"name"}:
        raise ConfigError(f"{source}: bed.{sorted(set(meta) - {'name'})[0]}: unknown field; allowed: name")
    if not machines or len(machines) > MAX_MACHINES:
        raise ConfigError(f"{source}: machines: must hold 1 to {MAX_MACHINES} machines, by role "
                          f"([machines.target], [machines.host], ...)")
    for role in machines:
        if not _ROLE.match(role):
            raise ConfigError(f"{source}: machines.{role}: a role is lower-case letters, digits and _ (max 16), "
                              "starting with a letter")
    parsed = {role: topology.parse(_named(t, role), source, f"machines.{role}") for role, t in machines.items()}
    bed = Bed(name=str(meta.get("name") or Path(source).stem), machines=parsed,
              networks={name: _network(source, name, n) for name, n in networks.items()}, source=source)
    _check_networks(bed)
    return bed


def _named(data: Any, role: str) -> Any:
    """A machine's table with its name defaulting to its role (its NICs' MAC addresses derive from it)."""
    if not isinstance(data, dict) or not isinstance(data.get("machine", {}), dict):
        return data  # topology.parse says what is wrong
    return {**data, "machine": {"name": role, **data.get("machine", {})}}


def _network(source: str, name: str, data: Any) -> Network:
    if not re.match(r"^[a-z][a-z0-9_]{0,15}$", name):
        raise ConfigError(f"{source}: networks.{name}: a name is lower-case letters, digits and _ (max 16)")
    if not isinstance(data, dict) or set(data) - {"kind"}:
        raise ConfigError(f"{source}: networks.{name}: must be a table with at most: kind")
    kind = data.get("kind", "dgram")
    if kind not in KINDS:
        raise ConfigError(f"{source}: networks.{name}.kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    return Network(name, kind)


def _check_networks(bed: Bed) -> None:
    """Every NIC on a network the bed has; every network joins exactly two machines, one NIC each,
    with two addresses of one subnet."""
    for role, t in bed.machines.items():
        for i, nic in enumerate(t.nics):
            if nic.network not in bed.networks:
                raise ConfigError(f"{bed.source}: machines.{role}.nic[{i}].network: {nic.network!r} is no network of "
                                  f"the bed; networks: {', '.join(bed.networks) or 'none'}")
    for name in bed.networks:
        peers = bed.peers(name)
        roles = [r for r, _ in peers]
        if len(peers) != 2 or len(set(roles)) != 2:
            raise ConfigError(f"{bed.source}: networks.{name}: must join exactly two machines with one NIC each "
                              f"(point to point); it has NICs of: {', '.join(roles) or 'none'}")
        (_, a), (_, b) = peers
        nets = {ipaddress.IPv4Interface(a.address).network, ipaddress.IPv4Interface(b.address).network}
        if len(nets) != 1 or a.ip == b.ip:
            raise ConfigError(f"{bed.source}: networks.{name}: its two addresses must be different hosts of one "
                              f"subnet (got {a.address} and {b.address})")


def pair() -> Bed:
    """The built-in two-machine bed: `target` (with two hot-pluggable NVMe controllers) and `host`,
    joined by the network `fabric`, each NIC hot-pluggable."""
    return parse({
        "bed": {"name": "pair"},
        "machines": {
            "target": {"machine": {"memory_mib": 2048},
                       "nvme": [{"id": "nvme0", "serial": "TBCTL0001"}, {"id": "nvme1", "serial": "TBCTL0002"}],
                       "nic": [{"id": "fabric0", "network": "fabric", "address": "10.0.0.1/24"}]},
            "host": {"machine": {"memory_mib": 2048},
                     "nic": [{"id": "fabric0", "network": "fabric", "address": "10.0.0.2/24"}]},
        },
        "networks": {"fabric": {"kind": "dgram"}},
    }, "<built-in pair>")


BUILTIN = {"pair": pair}


def ref(bed: Bed) -> str:
    """How to find `bed` again from another process (a live VM's record): a built-in's name, or
    its file's absolute path."""
    if bed.name in BUILTIN and bed.source == f"<built-in {bed.name}>":
        return bed.name
    return str(Path(bed.source).resolve())


def by_ref(name: str) -> Bed:
    """A built-in bed by name, else a bed file."""
    return BUILTIN[name]() if name in BUILTIN else load(name)
