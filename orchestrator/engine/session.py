"""A run: its settings, read once from the spec tbctl run wrote (topology, bed, SPDK tree, seed,
deadlines, known failures, shard), and its state (the machines' environment, results, tainted
and kept machines), which every suite gets as `run`, with how it starts machines."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import bed as beds
from orchestrator.config import expunge, runspec, topology
from orchestrator.errors import TbctlError
from orchestrator.machines import Machine, environment, snapshot
from orchestrator.machines import bed as machine_beds
from orchestrator.results import shard
from orchestrator.spdk.tree import Tree
from orchestrator.vm import qemu_binary
from orchestrator.vm.machine import Saved

DEFAULT_TIMEOUT = 120.0
ACCEL_SCALE = {"kvm": 1.0, "tcg": 3.0}  # suite deadlines are written for KVM


def add_options(parser: pytest.Parser) -> None:
    parser.getgroup("tbctl").addoption(
        "--tb-spec", metavar="FILE", help="the run's settings (a spec.json, as tbctl run writes it); default: "
                                          "the built-in topology, a drawn seed, every other choice the run's own")


@dataclass(frozen=True)
class Settings:
    """What the run was asked for, read once from its spec: the same for every test."""

    spec: runspec.RunSpec
    topology: topology.Topology
    artifacts: Path
    results_file: Path
    seed: int
    bed: beds.Bed | None  # the spec's bed file, for every suite that uses a bed
    known: expunge.Expunge
    part: shard.Shard | None  # the spec's shard, else the scheduler's
    durations: Mapping[str, float]

    @classmethod
    def load(cls, path: str | None) -> Settings:
        """A mistake in the spec, the topology or a file it names is a usage error, before any boot."""
        try:
            spec = runspec.load(path) if path else runspec.RunSpec()
            artifacts = spec.artifacts or Path.cwd() / "tbctl-artifacts" / time.strftime("run-%Y%m%d-%H%M%S")
            part = (shard.parse(spec.shard, "--shard", spec.shard_by) if spec.shard
                    else shard.from_env(os.environ, spec.shard_by))
            known = expunge.load(spec.known_failures) if spec.known_failures else expunge.Expunge()
            return cls(spec=spec, topology=environment.machine(spec.topology, spec.qemu), artifacts=artifacts.resolve(),
                       results_file=spec.results or artifacts.resolve() / "results.json",
                       seed=spec.seed if spec.seed is not None else random.randrange(1 << 31),
                       bed=_load_bed(spec.bed), known=known, part=part,
                       durations=shard.load_durations(spec.durations) if spec.durations else {})
        except TbctlError as e:
            raise pytest.UsageError(str(e)) from None


@dataclass
class Run:
    """The run under way: its settings, the machines' environment once a test needed one, and
    what the run has found so far."""

    settings: Settings
    env: environment.Environment | None = None  # once a test needed a machine
    start: str = "cold boot"  # how machines started, for results.json
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # Machines a test left in an unknown state, and why: never handed to the next test.
    tainted: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)  # --keep-vm: machine -> the failing test it is kept after
    shard_record: dict[str, Any] | None = None  # which shard of which split this run is, for results.json

    def taint(self, machine: str, why: str) -> None:
        """A machine no next test gets; the first reason is the one results.json shows."""
        self.tainted.setdefault(machine, why)

    def resolved(self) -> environment.Environment:
        """The image (built if missing) and the accelerator, resolved when first needed."""
        if self.env is None:
            s = self.settings
            self.env = environment.resolve(s.topology, s.spec.image, s.spec.accel, s.spec.spdk_dir)
        return self.env

    def bed_for(self, module: Any) -> beds.Bed:
        """The bed a suite module runs on: the spec's, else the built-in one its BED names; a suite
        without BED runs on the run's topology alone (role `default`)."""
        if self.settings.bed is not None:
            return self.settings.bed
        name = getattr(module, "BED", None)
        if name is None:
            return beds.of(self.settings.topology)
        bed = beds.BUILTIN[name]()
        for topo in bed.machines.values():
            topology.check_qemu(topo, qemu_binary.current())
        return bed

    def versions(self) -> dict[str, str | None]:
        """What the run runs on, as known failures name it (None: not part of this run)."""
        spdk_dir = self.settings.spec.spdk_dir
        return {"kernel": self.env.image.manifest.get("kernel") if self.env else None,
                "qemu": qemu_binary.current().version_text, "spdk": Tree(spdk_dir).release if spdk_dir else None}

    def deadline(self, item: pytest.Item) -> float:
        if self.settings.spec.timeout:
            return self.settings.spec.timeout
        marker = item.get_closest_marker("tb_timeout")
        base = marker.args[0] if marker else getattr(getattr(item, "module", None), "TIMEOUT", DEFAULT_TIMEOUT)
        return base * ACCEL_SCALE.get(self.env.accel if self.env else "tcg", 1.0)

    def rng(self, item: pytest.Item) -> random.Random:
        """This test's random source: the run's seed and the test's id, so `--seed` replays it."""
        return random.Random(f"{self.settings.seed}/{item.nodeid.rsplit('/', 1)[-1]}")

    def spdk_tree(self, rel: str) -> Tree:
        """The SPDK tree, which must have app `rel`: skips the test without a tree, fails it when
        the tree lacks the app."""
        spdk_dir = self.settings.spec.spdk_dir
        if spdk_dir is None:
            pytest.skip("needs an SPDK tree: tbctl run SUITE --spdk-dir DIR")
        if not (spdk_dir / rel).is_file():
            pytest.fail(f"--spdk-dir {spdk_dir}: no {rel} (is SPDK built?)")
        return Tree(spdk_dir)

    def topology_for(self, item: pytest.Item) -> topology.Topology:
        """The run's topology, with what the test's tb_machine marker changes (SPDK's hotplug
        variants: a vIOMMU, or none; SPDK's scripts: at least the memory SPDK's CI VMs have)."""
        marker = item.get_closest_marker("tb_machine")
        topo = self.settings.topology
        if marker is None:
            return topo
        fields = {k.removeprefix("min_"): max(v, getattr(topo, k.removeprefix("min_"))) if k.startswith("min_") else v
                  for k, v in marker.kwargs.items()}  # min_FIELD: at least this much, more if the topology has it
        return dataclasses.replace(topo, **fields)

    def saved(self, topo: topology.Topology) -> Saved | None:
        """The saved guest a machine of `topo` starts from when the spec asks for snapshots and
        the topology allows it; None: it boots cold (`start` says why)."""
        if not self.settings.spec.snapshot:
            return None
        env = self.resolved()
        reason = snapshot.unsupported(topo, env.accel)
        if reason:
            self.start = f"cold boot: {reason}"
            return None
        saved = snapshot.ensure(topo, env.image, env.accel, env.shares)
        self.start = f"snapshot {saved.dir.name}"
        return saved

    def boot(self, artifacts: Path, topo: topology.Topology | None = None) -> Machine:
        """A ready machine of `topo` (default: the run's), restored or cold (`saved`)."""
        topo, env = topo or self.settings.topology, self.resolved()
        return Machine(topo, env.image, artifacts, accel=env.accel, shares=env.shares, persistent=False,
                       restore=self.saved(topo), keepable=self.settings.spec.keep_vm).launch()

    def boot_bed(self, bed: beds.Bed, artifacts: Path) -> dict[str, Machine]:
        """Every machine of `bed`, ready, by role: each restored or cold as `boot`'s."""
        env = self.resolved()
        restore: dict[str, Saved | None] = {}
        starts: dict[str, None] = {}
        for role, topo in bed.machines.items():
            restore[role] = self.saved(topo)
            starts[self.start] = None
        self.start = "; ".join(starts)  # each distinct start once: its roles may share a save
        return machine_beds.boot(bed, env.image, env.accel, artifacts, env.shares, restore=restore,
                                 keepable=self.settings.spec.keep_vm)


def _load_bed(path: Path | None) -> beds.Bed | None:
    if path is None:
        return None
    bed = beds.load(path)
    for topo in bed.machines.values():
        topology.check_qemu(topo, qemu_binary.current())
    return bed


RUN = pytest.StashKey[Run]()


def run_of(config: pytest.Config) -> Run:
    return config.stash[RUN]
