"""A suite on a bed of two machines (driven by tests/test_bed.py): the `machines` fixture hands
them out by role, and each end of every network reaches the other."""

from __future__ import annotations

from orchestrator.guest import net
from orchestrator.machines import Machine

BED = "pair"  # the built-in bed; `tbctl run --bed FILE` gives another
TIMEOUT = 60
SEEN: list[list[str]] = []


def test_every_network_joins_its_two_ends(machines: dict[str, Machine]) -> None:
    SEEN.append(sorted(m.name for m in machines.values()))
    for a in machines.values():
        for b in machines.values():
            for nic in b.topology.nics if a is not b else ():
                if any(n.network == nic.network for n in a.topology.nics):
                    assert net.reachable(a.ssh, nic.ip), f"{a.topology.name} cannot reach {b.topology.name} at {nic.ip}"


def test_the_bed_is_handed_on(machines: dict[str, Machine]) -> None:
    """The module's bed serves the next test too: the same machines, still up."""
    assert SEEN == [sorted(m.name for m in machines.values())]
    assert sorted(machines) == ["host", "target"] and all(m.qemu_alive() for m in machines.values())
