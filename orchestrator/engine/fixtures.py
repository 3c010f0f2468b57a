"""What suites get: `machine` (booted once per module, booted again if a test left it dead or in a
state nobody could restore), `machines` (the module's bed, by role: its BED, or the run's --bed),
`fresh_machine` (a VM of the test's own), `ssh`, `qmp`, `hotplug` and `inject` (fault injectors, any
kind of the fault table, on the test's seeded schedule, recorded in results), `fabric` (the NVMe-oF variants of a bed's
target and host), `artifacts` (the test's directory), `run` (the run: its settings and state)."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import logs
from orchestrator.config.topology import Topology
from orchestrator.engine import results, slices, timeline
from orchestrator.engine.session import Run, run_of
from orchestrator.errors import TbctlError
from orchestrator.faults import Hotplug, NicFault, Stop, marker
from orchestrator.faults import table as fault_table
from orchestrator.faults.kind import Timing
from orchestrator.faults.timing import Timed
from orchestrator.guest import nvmf
from orchestrator.guest.ssh import SSH
from orchestrator.machines import Machine
from orchestrator.machines import bed as machine_beds
from orchestrator.spdk import nvmf as spdk_nvmf
from orchestrator.spdk.tree import Tree
from orchestrator.vm.qmp import QMP

log = logging.getLogger(f"{logs.ROOT}.engine")


@pytest.fixture(scope="session")
def run(request: pytest.FixtureRequest) -> Run:
    return run_of(request.config)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    return slices.test_dir(request.node)


class ModuleVM:
    """The module's machine, one per topology its tests ask for (the run's, or one a tb_machine marker
    changes): booted on first use, booted again if a test left it dead or in a state nobody
    could restore (see `Run.tainted`)."""

    def __init__(self, run: Run, name: str):
        self.run, self.name, self.boots = run, name, 0
        self.machines: dict[Topology, Machine] = {}

    def get(self, topo: Topology) -> Machine:
        m = self.machines.get(topo)
        if m is None or m.name in self.run.tainted or not m.qemu_alive() or not m.ssh_alive():
            if m is not None:
                let_go(self.run, {m.name: m})
            self.boots += 1
            self.machines[topo] = self.run.boot(self.run.settings.artifacts / self.name / f"vm-{self.boots}", topo)
        return self.machines[topo]

    def close(self) -> None:
        let_go(self.run, {m.name: m for m in self.machines.values()})


def let_go(run: Run, machines: dict[str, Machine]) -> None:
    """Machines done with: shut down, but those kept for the user (--keep-vm), only let go of.
    A test's machine is thrown away with its disk and its run directory, so QEMU is told to quit
    at once: a guest poweroff (4 s under TCG) would only slow the run down."""
    for m in machines.values():
        if m.name in run.kept:
            m.release()
    machine_beds.shutdown({k: m for k, m in machines.items() if m.name not in run.kept}, graceful=False)


@pytest.fixture(scope="module")
def module_vm(request: pytest.FixtureRequest, run: Run) -> Iterator[ModuleVM]:
    holder = ModuleVM(run, Path(str(request.module.__file__)).stem)
    yield holder
    holder.close()


class ModuleBed:
    """The module's bed: every machine booted together on first use, and together again if a test
    left one of them dead or in a state nobody could restore."""

    def __init__(self, run: Run, name: str, module: object):
        self.run, self.name, self.module, self.boots = run, name, module, 0
        self.machines: dict[str, Machine] = {}

    def get(self) -> dict[str, Machine]:
        broken = [m for m in self.machines.values()
                  if m.name in self.run.tainted or not m.qemu_alive() or not m.ssh_alive()]
        if not self.machines or broken:
            let_go(self.run, self.machines)
            self.boots += 1
            self.machines = self.run.boot_bed(self.run.bed_for(self.module),
                                              self.run.settings.artifacts / self.name / f"bed-{self.boots}")
        return self.machines

    def close(self) -> None:
        let_go(self.run, self.machines)


@pytest.fixture(scope="module")
def module_bed(request: pytest.FixtureRequest, run: Run) -> Iterator[ModuleBed]:
    holder = ModuleBed(run, Path(str(request.module.__file__)).stem, request.module)
    yield holder
    holder.close()


@pytest.fixture
def machines(request: pytest.FixtureRequest, module_bed: ModuleBed) -> dict[str, Machine]:
    return {role: slices.use(request.node, m) for role, m in module_bed.get().items()}


@pytest.fixture
def machine(request: pytest.FixtureRequest, module_vm: ModuleVM) -> Machine:
    return slices.use(request.node, module_vm.get(module_vm.run.topology_for(request.node)))


@pytest.fixture
def fresh_machine(request: pytest.FixtureRequest, run: Run, artifacts: Path) -> Iterator[Machine]:
    m = run.boot(artifacts / "vm", run.topology_for(request.node))
    try:
        yield slices.use(request.node, m)
    finally:
        let_go(run, {m.name: m})


@pytest.fixture
def ssh(machine: Machine) -> SSH:
    return machine.ssh


@pytest.fixture
def qmp(machine: Machine) -> QMP:
    return machine.qmp


def _record(run: Run, node: pytest.Item, injectors: list[Timed]) -> None:
    """What the test's fault injectors fired, and the delay before each: its results entry (and
    when each fired: its timeline)."""
    fired = [f for i in injectors for f in i.schedule]
    if fired:
        results.entry(run, node).setdefault("schedule", []).extend(fired)
    timeline.faults(node, [f for i in injectors for f in i.fired])


class Faults:
    """The test's faults, all on its seeded schedule, what fired recorded: any kind of the fault
    table as `tbctl inject` takes it (`inject(machine, "media-error nvme0 --lba 8-15")` returns
    what it did), or a controller's, a NIC's or an app's injector to drive step by step
    (`inject.hotplug(machine)`, `inject.link(...)`)."""

    def __init__(self, run: Run, node: pytest.Item):
        self.timing = Timing(run.rng(node), run.settings.spec.jitter)
        self.fired: list[Timed] = []

    def __call__(self, machine: Machine, fault: str) -> str:
        k, args = fault_table.parse(shlex.split(fault), f"fault {fault!r}")
        said, timed = k.fire(machine, args, self.timing)
        self.fired.append(timed)
        return said

    def hotplug(self, machine: Machine) -> Hotplug:
        self.fired.append(h := Hotplug(machine, self.timing.rng, self.timing.jitter))
        return h

    def link(self, machine: Machine, nic_id: str) -> NicFault:
        self.fired.append(link := NicFault(machine, nic_id, self.timing.rng, self.timing.jitter))
        return link

    def stop(self, machine: Machine) -> Stop:
        self.fired.append(stop := Stop(machine, self.timing.rng, self.timing.jitter))
        return stop


@pytest.fixture
def inject(request: pytest.FixtureRequest, run: Run) -> Iterator[Faults]:
    faults = Faults(run, request.node)
    yield faults
    _record(run, request.node, faults.fired)


@pytest.fixture
def hotplug(machine: Machine, inject: Faults) -> Hotplug:
    """The default machine's controllers plugged and pulled on the test's schedule (inject.hotplug)."""
    return inject.hotplug(machine)


@pytest.fixture
def marker_faults(request: pytest.FixtureRequest, run: Run, fresh_machine: Machine) -> Iterator[marker.Watch]:
    """The run's marker faults (--fault), watching the test's script on its machine: fed its
    output lines, each fires once; what fired goes on the test's schedule and timeline."""
    watch = marker.Watch([marker.parse(f) for f in run.settings.spec.faults], fresh_machine,
                         Timing(run.rng(request.node), run.settings.spec.jitter))
    yield watch
    watch.finish(0)  # a test that ended early fires no fault after it
    _record(run, request.node, watch.fired)
    timeline.faults(request.node, watch.failed)  # where a fault that failed was fired, beside the steps


FABRIC_KINDS = ("kernel", "spdk")


@dataclass(frozen=True)
class Fabric:
    """One NVMe-oF variant: who serves (the guest kernel's nvmet, or SPDK's nvmf_tgt), who
    connects (the kernel's initiator, or the suite's SPDK app: its SPDK_HOST_APP), over what."""

    target: str
    host: str
    transport: str
    tree: Tree | None  # the SPDK tree, when a part of the variant is SPDK's


@pytest.fixture(params=[pytest.param(v, id=f"{v[0]}_target-{v[1]}_host-{v[2]}")
                        for v in itertools.product(FABRIC_KINDS, FABRIC_KINDS, nvmf.TRANSPORTS)])
def fabric(request: pytest.FixtureRequest, machines: dict[str, Machine], run: Run) -> Iterator[Fabric]:
    """Both machines of the bed set up for the variant's transport (host identities, soft-RoCE
    for RDMA); SPDK's parts skipped without a tree. Afterwards every kernel connection and export
    is gone, so the next variant starts clean; a machine that cannot be cleared (a kernel stuck
    in the fault's teardown) is discarded, not reported as a second error of the same test."""
    target_kind, host_kind, transport = request.param
    tree = None
    if target_kind == "spdk":
        tree = run.spdk_tree(spdk_nvmf.NVMF_TGT)
    if host_kind == "spdk":
        tree = run.spdk_tree(request.module.SPDK_HOST_APP)
    # side by side, cold or restored: each sets its fabric up and checks it carries what the test will use;
    # interrupted, the commands end on their own deadlines against machines the bed then shuts down
    pool = concurrent.futures.ThreadPoolExecutor(len(machines), thread_name_prefix="fabric")
    try:
        for f in [pool.submit(nvmf.prepare, m.ssh, role, transport, m.topology.nics[0].mac(m.topology.name),
                              next(p for r, p in machines.items() if r != role).topology.nics[0].ip)
                  for role, m in machines.items()]:
            f.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    yield Fabric(target_kind, host_kind, transport, tree)
    for m in machines.values():
        if m.name in run.tainted or not (m.qemu_alive() and m.ssh_alive()):
            continue
        try:
            nvmf.clear(m.ssh)
        except TbctlError as e:
            log.warning(f"{m.name}: NVMe-oF state not cleared, machine discarded: {e}")
            run.taint(m.name, f"NVMe-oF state not cleared: {e}")
