"""The emulated devices of a topology on a QEMU command line: NVMe controllers with their
namespaces, subsystems, PMR memory and root ports, and the host directories shared read-only
(virtfs). One template (templates/qemu/devices.j2) serves tbctl's own QEMU and the Vagrantfile's
`libvirt.qemuargs`, so a topology is described once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config.topology import Controller, Topology
from orchestrator.render import render
from orchestrator.vm.qmp import blockdev


def backing(nvme_dir: Path, ctrl: Controller, nsid: int) -> Path:
    return nvme_dir / f"{ctrl.node(nsid)}.raw"


def pmr(nvme_dir: Path, ctrl: Controller) -> Path:
    return nvme_dir / f"{ctrl.id}.pmr"


def create_backing(topo: Topology, nvme_dir: Path) -> list[Path]:
    """Sparse files for every namespace and PMR of the topology (made empty, at full size)."""
    made = []
    nvme_dir.mkdir(parents=True, exist_ok=True)
    for c in topo.controllers:
        sizes = [(backing(nvme_dir, c, i), ns.size_mib) for i, ns in enumerate(c.namespaces, 1)]
        for path, mib in sizes + ([(pmr(nvme_dir, c), c.pmr_size_mib)] if c.pmr_size_mib else []):
            with open(path, "wb") as f:
                f.truncate(mib << 20)
            made.append(path)
    return made


def context(topo: Topology, nvme_dir: Path, attached: list[Controller], shares: dict[str, Path]) -> dict[str, Any]:
    """What templates/qemu/devices.j2 needs: `attached` are the controllers present at start
    (the others' root ports stay empty for a later hot-add); `shares`: virtfs tag -> directory."""
    # chassis/slot numbers by position, controllers first: a topology's numbers never change
    devices = [(c.id, c.root_port, c.hotplug) for c in topo.controllers] + \
              [(n.id, n.root_port, n.hotplug) for n in topo.nics]
    return {
        "topology": topo,
        "blockdevs": [blockdev(c.node(i), backing(nvme_dir, c, i))
                      for c in attached for i in range(1, len(c.namespaces) + 1)],
        "objects": [{"qom-type": "memory-backend-file", "id": f"{c.id}-pmr", "share": True,
                     "mem-path": str(pmr(nvme_dir, c)), "size": c.pmr_size_mib << 20}
                    for c in topo.controllers if c.pmr_size_mib],
        "root_ports": {dev: {"driver": "pcie-root-port", "id": port, "chassis": i, "slot": i, "bus": "pcie.0"}
                       for i, (dev, port, hot) in enumerate(devices, 1) if hot},
        "attached": {c.id for c in attached},
        "shares": shares,
    }


def args(topo: Topology, nvme_dir: Path, shares: dict[str, Path]) -> list[str]:
    """The devices' part of the command line alone, every controller attached (the Vagrantfile's)."""
    text = render("qemu/devices.j2", **context(topo, nvme_dir, list(topo.controllers), shares))
    return [line for line in text.splitlines() if line]
