"""What several commands share: their common options, and the steps before any boot (the
topology, the QEMU, the image, the accelerator, an SPDK tree's check), and reaching a running VM."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator import image, spdk
from orchestrator.cli.argtypes import SECONDS, mirror_url, writable_dir
from orchestrator.cli.live import live_record
from orchestrator.config import topology
from orchestrator.config.runspec import RunSpec
from orchestrator.errors import ConfigError
from orchestrator.machines import Machine, environment
from orchestrator.machines.environment import Environment
from orchestrator.paths import SOURCE_ROOT, recipe_names
from orchestrator.spdk.tree import Tree
from orchestrator.vm import qemu_binary

SUITES = SOURCE_ROOT / "suites"
KNOWN_FAILURES = SUITES / "known_failures.toml"  # the project's own list, applied unless told otherwise
MIRROR_HELP = "Debian mirror URL for an image build (default: the host's apt source)"


def topology_opts(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--topology", "-t", metavar="FILE", type=topology.ref,
                    help="machine/NVMe topology (TOML), or a built-in one by name (spdk-ci); default: built-in")
    sp.add_argument("--accel", choices=topology.ACCELS, help="override the topology's accelerator")


def image_opts(sp: argparse.ArgumentParser, tree_required: bool = False) -> None:
    sp.add_argument("--image", metavar="RECIPE", choices=recipe_names(),
                    help=f"guest image recipe (default: the topology's, else {image.SPDK_IMAGE} with "
                         f"--spdk-dir, else {image.DEFAULT_IMAGE}): {', '.join(recipe_names())}")
    sp.add_argument("--spdk-dir", metavar="DIR", required=tree_required,
                    help="built SPDK tree, shared read-only into the guest (checked against the image first)")
    sp.add_argument("--qemu", metavar="PATH", help=f"QEMU binary (default: ${qemu_binary.ENV}, the topology's "
                                                   "`qemu`, else PATH's; tbctl qemu list)")


def boot_opts(sp: argparse.ArgumentParser) -> None:
    topology_opts(sp)
    sp.add_argument("--boot-timeout", type=SECONDS, default=90, metavar="S", help="deadline to SSH-ready (90)")
    sp.add_argument("--mirror", type=mirror_url, help=MIRROR_HELP)


def artifacts_root() -> Path:
    """Where runs keep their artifacts ($TBCTL_ARTIFACTS, else ./tbctl-artifacts), checked writable."""
    if os.environ.get("TBCTL_ARTIFACTS"):
        return writable_dir(Path(os.environ["TBCTL_ARTIFACTS"]), "$TBCTL_ARTIFACTS")
    return writable_dir(Path.cwd() / "tbctl-artifacts", "the artifacts directory")


def machine_spec(args: argparse.Namespace) -> RunSpec:
    """The machine options given (the topology, QEMU, image, accelerator, SPDK tree) as a spec."""
    return RunSpec().given(topology=args.topology, qemu=args.qemu, image=args.image, accel=args.accel,
                           spdk_dir=args.spdk_dir)


def resolve(spec: RunSpec, mirror: str | None = None) -> Environment:
    """The topology, its QEMU, the image (built if needed; the SPDK-ready one for a tree), the accelerator."""
    return environment.resolve(environment.machine(spec.topology, spec.qemu), spec.image, spec.accel,
                               spec.spdk_dir, mirror)


def prepare(spec: RunSpec, mirror: str | None = None) -> Environment:
    """`resolve`, and an SPDK tree checked against the image: all before booting."""
    env = resolve(spec, mirror)
    if env.spdk_dir:
        check_tree(env.spdk_dir, env.image, env.accel)
    return env


def check_tree(tree: Path, img: image.Image, acc: str) -> None:
    """Refuse, before a boot, a tree whose apps cannot start in the image: every problem named."""
    problems = spdk.preflight(Tree(tree), img, acc)
    if problems:
        raise ConfigError(f"--spdk-dir {tree}: its apps cannot start in image {img.manifest['name']}:"
                          "\n  " + "\n  ".join(p.line() for p in problems))


def new_machine(args: argparse.Namespace, persistent: bool) -> Machine:
    env = prepare(machine_spec(args), args.mirror)
    m = Machine(env.topology, env.image, Path("."), name=args.name or None, accel=env.accel, persistent=persistent,
                boot_timeout=args.boot_timeout, shares=env.shares)
    m.artifacts = artifacts_root() / f"{m.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return m


@contextmanager
def attached(name: str, ssh: bool = False) -> Iterator[Machine]:
    """A running VM of another tbctl process, let go of (not stopped) afterwards."""
    m = Machine.attach(live_record(name))
    try:
        if ssh:
            m.connect_ssh()
        yield m
    finally:
        m.release()


def known_suites() -> list[str]:
    return sorted(p.stem for p in SUITES.glob("*.py") if not p.name.startswith(("_", "conftest")))


def suite_paths(names: list[str]) -> list[str]:
    """Suite names (suites/<name>.py, optionally ::test), the node ids tbctl prints (suites/<name>.py::test,
    from any directory) or paths to suite files -> pytest args."""
    out = []
    known = known_suites()
    for name in names:
        base, sep, rest = name.partition("::")
        ours = [SUITES / f"{base}.py"] + ([SUITES / Path(base).name] if base.startswith("suites/") else [])
        path = next((p for p in ours if p.is_file()), Path(base))
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(f"suite {base!r}: no suites/{base}.py and no such file; known suites: {', '.join(known)}")
        if rest:
            _check_test(base, str(path.resolve()), rest)
        out.append(str(path.resolve()) + sep + rest)
    return out


def _check_test(suite: str, path: str, test: str) -> None:
    """SUITE::TEST names a test of the suite (a whole parametrized test, or one of its ids)."""
    from orchestrator.engine import run  # pytest is loaded only when a test is named

    names = run.names_of(path)
    if not any(n == test or n.split("[", 1)[0] == test for n in names):
        raise ConfigError(f"{suite}::{test}: no such test in {suite}; its tests: {', '.join(names) or 'none'}")
