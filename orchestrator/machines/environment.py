"""What a run's settings resolve to, by one set of rules wherever a machine is started (tbctl
run and its engine, up, smoke, spdk check, repro, the Vagrantfile): the topology, the QEMU that
can run it, the image (built if missing), the accelerator, and what is shared into the guest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator import image
from orchestrator.config import topology
from orchestrator.errors import ConfigError
from orchestrator.vm import accel, qemu_binary


def shares(spdk_dir: Path | None) -> dict[str, Path]:
    """The virtfs shares of a machine: the SPDK tree, as tag `spdk`, when the run has one."""
    return {"spdk": spdk_dir.resolve()} if spdk_dir else {}


def machine(topology_file: Path | None, qemu: str | None) -> topology.Topology:
    """The run's topology, with the QEMU chosen for it (made this process's) able to run it."""
    topo = topology.load(topology_file) if topology_file else topology.default()
    check(topo, qemu)
    return topo


def check(topo: topology.Topology, qemu: str | None) -> qemu_binary.Qemu:
    """The QEMU for `topo` (--qemu, $TBCTL_QEMU, the topology's, PATH's), made this process's,
    once it is known to have what `topo` asks for."""
    binary = qemu_binary.use(qemu_binary.select(qemu, topo.qemu, topo.source))
    topology.check_qemu(topo, binary)
    return binary


@dataclass(frozen=True)
class Environment:
    topology: topology.Topology
    image: image.Image
    accel: str
    spdk_dir: Path | None

    @property
    def shares(self) -> dict[str, Path]:
        return shares(self.spdk_dir)


def resolve(topo: topology.Topology, image_name: str | None, accel_name: str | None, spdk_dir: Path | None,
            mirror: str | None = None) -> Environment:
    """The image (the SPDK-ready one for a tree, built if missing) and the accelerator for `topo`."""
    if spdk_dir and not spdk_dir.is_dir():
        raise ConfigError(f"--spdk-dir {spdk_dir}: not a directory")
    img = image.ensure(image.choose(image_name, topo.image, spdk_dir is not None), mirror=mirror)
    return Environment(topo, img, accel.resolve(accel_name or topo.accel, img), spdk_dir)
