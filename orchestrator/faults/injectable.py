"""What a fault injector needs of a machine, and nothing more: its QMP, its guest's SSH, its
topology, its qtest socket and QEMU's stderr (where the trace goes), where a controller's
namespace is backed, and its NICs' network ends. Any object with these will do: a machine tbctl booted, or one it attached to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from orchestrator.config.topology import Controller, Topology
from orchestrator.errors import MachineError
from orchestrator.guest.ssh import SSH
from orchestrator.net.links import Link
from orchestrator.vm.qmp import QMP


class Injectable(Protocol):
    name: str  # the VM's name, as `tbctl status` shows it: what a fault's report names
    topology: Topology
    links: dict[str, Link]  # a bed machine's NICs: their network's two ends

    @property
    def qmp(self) -> QMP: ...

    @property
    def ssh(self) -> SSH: ...

    @property
    def qtest_socket(self) -> Path | None: ...

    @property
    def stderr_log(self) -> Path: ...

    def backing(self, ctrl: Controller, nsid: int) -> Path: ...

    def lost(self, what: str) -> MachineError: ...
