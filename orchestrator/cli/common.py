"""What several commands share: their common options, and the steps before any boot (the
topology, the QEMU, the image, the accelerator, an SPDK tree's check), and reaching a running VM."""

from __future__ import annotations

import argparse
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from orchestrator import image, spdk
from orchestrator.config import topology
from orchestrator.config.runspec import RunSpec
from orchestrator.errors import ConfigError
from orchestrator.machines import Machine, environment
from orchestrator.machines.environment import Environment
from orchestrator.paths import SOURCE_ROOT, recipe_names
from orchestrator.spdk.tree import Tree
from orchestrator.vm import qemu_binary, registry

SUITES = SOURCE_ROOT / "suites"
KNOWN_FAILURES = SUITES / "known_failures.toml"  # the project's own list, applied unless told otherwise
MIRROR_HELP = "Debian mirror URL for an image build (default: the host's apt source)"


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake told in one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def output_file(text: str, parents: bool = False) -> str:
    """An argparse type for a file a command writes: checked when the arguments are read, so a
    run never ends, after all its tests, unable to write what it was asked for. Its directory
    must exist, unless the command makes it (`parents`: then the nearest one above that exists)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory; name the file to write")
    parent = _nearest(path.parent) if parents else path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no directory {parent} to write it in")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text}: cannot be written here (permission denied or read-only)")
    return text


def writable_dir(path: Path, what: str) -> Path:
    """A directory a command will make files in, checked (not made) before anything boots: it, or
    the nearest directory above it that exists, can be written."""
    there = _nearest(path)
    if not there.is_dir():
        raise ConfigError(f"{what} {path}: cannot be made: {there} is not a directory")
    if not os.access(there, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: cannot be written (permission denied or read-only)")
    return path


def _nearest(path: Path) -> Path:
    """`path`, or the nearest directory above it that exists (what a maker of `path` writes in)."""
    return next(p for p in (path, *path.parents) if p.exists())


def ranged(kind: type[int] | type[float], low: float, high: float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind` in [low, high] (or (low, high] when `above`)."""
    def num(v: float) -> str:
        return str(int(v)) if kind is int else f"{v:g}"
    shown = f"{'above' if above else 'at least'} {num(low)} and at most {num(high)}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"{text}: must be {shown}")
        return value
    return parse


def mirror_url(text: str) -> str:
    """An argparse type: a Debian mirror is an http(s) URL (or file: for a local copy)."""
    u = urllib.parse.urlsplit(text)
    if u.scheme not in ("http", "https", "file") or (u.scheme != "file" and not u.hostname):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mirror URL: http://HOST/PATH, https://... or file:///PATH")
    return text


SECONDS = ranged(float, 0, 7 * 24 * 3600, above=True)  # a deadline: some time, not forever


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


def live_record(name: str) -> registry.Record:
    """The registry record of the running VM `name` (orphans reaped first); else one line."""
    registry.reap()
    rec = registry.load(name)
    if rec is None or not rec.qemu_alive():
        known = ", ".join(r.name for r in registry.records()) or "none"
        raise ConfigError(f"no running VM named {name!r} (running: {known})")
    return rec


def running() -> list[registry.Record]:
    """The VMs up now (orphans reaped first)."""
    registry.reap()
    return [r for r in registry.records() if r.qemu_alive()]


def known_suites() -> list[str]:
    return sorted(p.stem for p in SUITES.glob("*.py") if not p.name.startswith(("_", "conftest")))


def suite_paths(names: list[str]) -> list[str]:
    """Suite names (suites/<name>.py, optionally ::test) or paths to suite files -> pytest args."""
    out = []
    known = known_suites()
    for name in names:
        base, sep, rest = name.partition("::")
        path = SUITES / f"{base}.py" if (SUITES / f"{base}.py").is_file() else Path(base)
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
