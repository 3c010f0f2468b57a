"""A run's settings, from tbctl's pytest options: the `bed` every suite gets (topology, image,
accelerator, SPDK tree, seed, deadlines) and how it starts machines."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator import image
from orchestrator.config import bed as beds
from orchestrator.config import expunge, topology
from orchestrator.engine import shard
from orchestrator.errors import TbctlError
from orchestrator.machines import Machine, snapshot
from orchestrator.spdk.tree import Tree
from orchestrator.vm import accel, qemu_binary

DEFAULT_TIMEOUT = 120.0
ACCEL_SCALE = {"kvm": 1.0, "tcg": 3.0}  # suite deadlines are written for KVM


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup("tbctl")
    g.addoption("--tb-topology", metavar="FILE", help="machine/NVMe topology (TOML); default: built-in")
    g.addoption("--tb-bed", metavar="FILE", help="bed of several machines (TOML) for suites that use one; "
                                                 "default: the suite's own (its BED)")
    g.addoption("--tb-accel", choices=topology.ACCELS, help="override the topology's accelerator")
    g.addoption("--tb-qemu", metavar="PATH", help=f"QEMU binary (default: ${qemu_binary.ENV}, the topology's, PATH's)")
    g.addoption("--tb-timeout", type=float, metavar="S", help="per-test deadline, overriding the suites' own")
    g.addoption("--tb-artifacts", metavar="DIR", help="where each test's artifacts go")
    g.addoption("--tb-results", metavar="FILE", help="results.json path (default: in the artifacts dir)")
    g.addoption("--tb-spdk-dir", metavar="DIR", help="SPDK tree (built) shared read-only into the guest")
    g.addoption("--tb-image", metavar="RECIPE", help="guest image recipe (default: the topology's, else "
                                                    "the SPDK-ready one with an SPDK tree, else the default)")
    g.addoption("--tb-keep-vm", action="store_true", help="keep a failing test's machines running after the run")
    g.addoption("--tb-seed", type=int, help="the run's seed: fault timing; recorded in results.json (default: random)")
    g.addoption("--tb-jitter", type=float, default=0.3, metavar="S",
                help="hotplug faults fire after a seeded delay in [0, S) s (default 0.3; 0: at once)")
    g.addoption("--tb-snapshot", action="store_true",
                help="start machines from a saved ready guest (hot-pluggable controllers only; else cold boot)")
    g.addoption("--tb-expunge", metavar="FILE",
                help="known failures (TOML): reported as such, they do not fail the run")
    g.addoption("--tb-shard", metavar="K/N", help="run only shard K of N (default: $TBCTL_SHARD, the scheduler's)")
    g.addoption("--tb-shard-by", choices=shard.BY, default="module",
                help="keep a suite module in one shard (default), or split by test")
    g.addoption("--tb-durations", metavar="FILE", help="results.json of an earlier run: balance the shards by it")


@dataclass
class Bed:
    """Session-wide settings and the run's results."""

    config: pytest.Config
    topology: topology.Topology
    artifacts: Path
    seed: int
    spdk_dir: Path | None
    keep_vm: bool
    timeout_override: float | None
    jitter: float  # seconds: each hotplug fault fires after a seeded delay below this
    snapshot: bool  # start machines from a saved ready guest where the topology allows
    start: str = "cold boot"  # how machines started, for results.json
    chosen_image: image.Image | None = None  # once a test needed one
    resolved_accel: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # Machines a test left in an unknown state: never handed to the next test.
    tainted: set[str] = field(default_factory=set)
    kept: dict[str, str] = field(default_factory=dict)  # --keep-vm: machine -> the failing test it is kept after
    bed_file: beds.Bed | None = None  # --tb-bed, for every suite that uses a bed
    known: expunge.Expunge = field(default_factory=expunge.Expunge)  # --tb-expunge
    part: shard.Shard | None = None  # --tb-shard, else the environment's
    durations: dict[str, float] = field(default_factory=dict)  # --tb-durations
    shard_record: dict[str, Any] | None = None  # which shard of which split this run is, for results.json

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Bed":
        """The run's bed from its options; a bad topology or QEMU is a usage error, before any boot."""
        path, spdk, seed = (config.getoption(o) for o in ("tb_topology", "tb_spdk_dir", "tb_seed"))
        try:
            topo = topology.load(path) if path else topology.default()
            topology.check_qemu(topo, qemu_binary.use(qemu_binary.select(config.getoption("tb_qemu"), topo.qemu,
                                                                         topo.source)))
        except TbctlError as e:
            raise pytest.UsageError(str(e)) from None
        artifacts = config.getoption("tb_artifacts") or Path.cwd() / "tbctl-artifacts" / time.strftime(
            "run-%Y%m%d-%H%M%S")
        bed_file = _load_bed(config.getoption("tb_bed"))
        try:
            known_file, durations = config.getoption("tb_expunge"), config.getoption("tb_durations")
            known = expunge.load(known_file) if known_file else expunge.Expunge()
            by, spec = config.getoption("tb_shard_by"), config.getoption("tb_shard")
            part = shard.parse(spec, "--shard", by) if spec else shard.from_env(os.environ, by)
            times = shard.load_durations(durations) if durations else {}
        except TbctlError as e:
            raise pytest.UsageError(str(e)) from None
        return cls(config=config, topology=topo, artifacts=Path(artifacts).resolve(), bed_file=bed_file,
                   seed=seed if seed is not None else random.randrange(1 << 31),
                   spdk_dir=Path(spdk).resolve() if spdk else None, keep_vm=config.getoption("tb_keep_vm"),
                   timeout_override=config.getoption("tb_timeout"), jitter=config.getoption("tb_jitter"),
                   snapshot=config.getoption("tb_snapshot"), known=known, part=part, durations=times)

    def bed_for(self, module: Any) -> beds.Bed:
        """The bed a suite module runs on: --tb-bed, else the built-in one its BED names; a suite
        without BED runs on the run's topology alone (role `default`)."""
        if self.bed_file is not None:
            return self.bed_file
        name = getattr(module, "BED", None)
        if name is None:
            return beds.of(self.topology)
        spec = beds.BUILTIN[name]()
        for topo in spec.machines.values():
            topology.check_qemu(topo, qemu_binary.current())
        return spec

    @property
    def image(self) -> image.Image:
        if self.chosen_image is None:
            self.chosen_image = image.ensure(image.choose(self.config.getoption("tb_image"), self.topology.image,
                                                          self.spdk_dir is not None))
        return self.chosen_image

    @property
    def accel(self) -> str:
        if self.resolved_accel is None:
            self.resolved_accel = accel.resolve(self.config.getoption("tb_accel") or self.topology.accel, self.image)
        return self.resolved_accel

    def versions(self) -> dict[str, str | None]:
        """What the run runs on, as known failures name it (None: not part of this run)."""
        return {"kernel": self.chosen_image.manifest.get("kernel") if self.chosen_image else None,
                "qemu": qemu_binary.current().version_text,
                "spdk": Tree(self.spdk_dir).release if self.spdk_dir else None}

    def deadline(self, item: pytest.Item) -> float:
        if self.timeout_override:
            return self.timeout_override
        marker = item.get_closest_marker("tb_timeout")
        base = marker.args[0] if marker else getattr(item.module, "TIMEOUT", DEFAULT_TIMEOUT)
        return base * ACCEL_SCALE.get(self.resolved_accel or "tcg", 1.0)

    def rng(self, item: pytest.Item) -> random.Random:
        """This test's random source: the run's seed and the test's id, so `--seed` replays it."""
        return random.Random(f"{self.seed}/{item.nodeid.rsplit('/', 1)[-1]}")

    def spdk_tree(self, rel: str) -> Tree:
        """The SPDK tree, which must have app `rel`: skips the test without a tree, fails it when
        the tree lacks the app."""
        if self.spdk_dir is None:
            pytest.skip("needs an SPDK tree: tbctl run SUITE --spdk-dir DIR")
        if not (self.spdk_dir / rel).is_file():
            pytest.fail(f"--spdk-dir {self.spdk_dir}: no {rel} (is SPDK built?)")
        return Tree(self.spdk_dir)

    def topology_for(self, item: pytest.Item) -> topology.Topology:
        """The run's topology, with what the test's tb_machine marker changes (SPDK's hotplug
        variants: a vIOMMU, or none)."""
        marker = item.get_closest_marker("tb_machine")
        return dataclasses.replace(self.topology, **marker.kwargs) if marker else self.topology

    def boot(self, artifacts: Path, topo: topology.Topology | None = None) -> Machine:
        """A ready machine of `topo` (default: the run's): restored from a saved guest with
        --tb-snapshot when the topology allows it, booted cold otherwise (and `start` says why)."""
        topo = topo or self.topology
        shares = {"spdk": self.spdk_dir} if self.spdk_dir else {}
        saved = None
        if self.snapshot:
            reason = snapshot.unsupported(topo)
            if reason:
                self.start = f"cold boot: {reason}"
            else:
                saved = snapshot.ensure(topo, self.image, self.accel, shares)
                self.start = f"snapshot {saved.dir.name}"
        return Machine(topo, self.image, artifacts, accel=self.accel, shares=shares, persistent=False,
                       restore=saved, keepable=self.keep_vm).launch()


def _load_bed(path: str | None) -> beds.Bed | None:
    if not path:
        return None
    try:
        spec = beds.load(path)
        for topo in spec.machines.values():
            topology.check_qemu(topo, qemu_binary.current())
    except TbctlError as e:
        raise pytest.UsageError(str(e)) from None
    return spec


BED = pytest.StashKey[Bed]()


def bed_of(config: pytest.Config) -> Bed:
    return config.stash[BED]
