"""tbctl command line: argument parsing only; everything it does is a call into the library."""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from orchestrator import __version__, faults, guest, image, spdk
from orchestrator.vm import accel, qemu_binary, qemu_install, registry, snapshot
from orchestrator.image import shell as image_shell
from orchestrator.engine import repro
from orchestrator.spdk import tree as spdk_tree
from orchestrator.config import topology
from orchestrator.errors import ConfigError, TbctlError
from orchestrator.vm.machine import Machine
from orchestrator.paths import SOURCE_ROOT, recipe_names

SUITES = SOURCE_ROOT / "suites"

EPILOG = """examples:
  tbctl run sw_hotplug                   run a suite on the default guest; summary + artifacts
  tbctl run sw_hotplug -k kernel --junit out.xml
  tbctl run sw_hotplug -- -x --pdb          anything after -- goes to pytest
  tbctl repro sw_hotplug::test_orderly_hotplug -n 50 --jobs 2     a flake: rate, signatures, bundle
  tbctl list                             suites and their tests
  tbctl image build                      build (or reuse) the default guest image
  tbctl image shell --image bookworm-spdk --bind ~/spdk -- make -j2    build a tree for the guest
  tbctl spdk check --spdk-dir ~/spdk     will the tree start in the guest? (files, then a start probe)
  tbctl up --name dev                    boot a VM that stays up; prints its SSH and QMP endpoints
  tbctl ssh dev -- nvme list             run a command in it
  tbctl qmp dev query-pci                any QMP command, arguments as JSON
  tbctl hotplug dev remove nvme0         device_del + wait until the guest lost it
  tbctl hotplug dev add nvme0            device_add + wait until the guest has its namespace
  tbctl inject dev doorbell nvme0 sq-tail-too-big     invalid doorbell write (qtest), trace shown
  tbctl inject dev bus-master nvme0 off --via guest
  tbctl smoke                            boot, hot-remove and hot-add every controller, shut down
  tbctl status ; tbctl down dev | --all
"""


def _artifacts_root() -> Path:
    return Path(os.environ.get("TBCTL_ARTIFACTS") or Path.cwd() / "tbctl-artifacts")


def _load_topology(path: str | None) -> topology.Topology:
    return topology.load(path) if path else topology.default()


def _prepare(args: argparse.Namespace) -> tuple[topology.Topology, image.Image, str]:
    """Validate everything, build the image if needed, pick the accelerator, and check an SPDK
    tree against the image: all before booting."""
    topo, img, acc = _environment(args)
    if args.spdk_dir:
        problems = spdk.preflight(spdk_tree.Tree(Path(args.spdk_dir)), img, acc)
        if problems:
            raise ConfigError(f"--spdk-dir {args.spdk_dir}: its apps cannot start in image {img.manifest['name']}:"
                              "\n  " + "\n  ".join(p.line() for p in problems))
    return topo, img, acc


def _environment(args: argparse.Namespace) -> tuple[topology.Topology, image.Image, str]:
    """The topology, the image (built if needed; the SPDK-ready one for a tree) and the accelerator."""
    topo = _load_topology(args.topology)
    topology.check_qemu(topo, qemu_binary.use(qemu_binary.select(args.qemu, topo.qemu, topo.source)))
    if args.spdk_dir and not Path(args.spdk_dir).is_dir():
        raise ConfigError(f"--spdk-dir {args.spdk_dir}: not a directory")
    img = image.ensure(image.choose(args.image, topo.image, bool(args.spdk_dir)), mirror=args.mirror)
    return topo, img, accel.resolve(args.accel or topo.accel, img)


def _machine(args: argparse.Namespace, persistent: bool) -> Machine:
    topo, img, acc = _prepare(args)
    name = args.name or None
    shares = {"spdk": Path(args.spdk_dir).resolve()} if args.spdk_dir else {}
    m = Machine(topo, img, Path("."), name=name, accel=acc, persistent=persistent, boot_timeout=args.boot_timeout,
                shares=shares)
    m.artifacts = _artifacts_root() / f"{m.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return m


def _attach(name: str) -> Machine:
    registry.reap()
    rec = registry.load(name)
    if rec is None or not rec.qemu_alive():
        known = ", ".join(r.name for r in registry.records()) or "none"
        raise ConfigError(f"no running VM named {name!r} (running: {known})")
    return Machine.attach(rec)


def cmd_image(args: argparse.Namespace) -> int:
    if args.image_cmd == "shell":
        if args.timeout is not None and args.timeout <= 0:
            raise ConfigError(f"image shell: --timeout must be positive seconds, not {args.timeout:g}")
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        img = image.ensure(args.image, mirror=args.mirror)
        return image_shell.run(img, [Path(b) for b in args.bind], command, args.timeout)
    if args.image_cmd == "build":
        img = image.ensure(args.recipe, mirror=args.mirror)
        print(f"{img.dir}  ({img.manifest['kernel']}, built in {img.manifest['build_seconds']} s)")
    else:
        for img in image.list_cached():
            m = img.manifest
            size = sum(f.stat().st_size for f in img.dir.iterdir()) >> 20
            print(f"{m['name']:14} {m['digest']}  kernel {m['kernel']}  {size} MiB  built {m['built']}  {img.dir}")
    return 0


def cmd_spdk(args: argparse.Namespace) -> int:
    """tbctl spdk check: the tree against the image (files), then one of its apps started in a guest."""
    topo, img, acc = _environment(args)
    tree = spdk_tree.Tree(Path(args.spdk_dir))
    libs = ", ".join(str(d.relative_to(tree.root)) for d in tree.lib_dirs()) or "none (static build)"
    print(f"tree {tree.root}: SPDK {tree.release}; apps: {', '.join(tree.apps) or 'none'}; "
          f"shared libraries in: {libs}")
    problems = spdk.preflight(tree, img, acc)
    for p in problems:
        print(f"problem: {p.line()}")
    if problems:
        print(f"spdk check: {len(problems)} problem(s); nothing booted")
        return 1
    cfg = tree.build_config()
    cpu_line = f"; compiled for CPU features {','.join(cfg.cpu_flags)} (all in the guest's)" if cfg else ""
    print(f"files: every library and symbol version the apps need is in image {img.manifest['name']}{cpu_line}")
    if args.no_start:
        return 0
    m = Machine(topo, img, _artifacts_root() / f"spdk-check-{time.strftime('%Y%m%d-%H%M%S')}", accel=acc,
                persistent=False, shares={"spdk": tree.root}, boot_timeout=args.boot_timeout)
    print(f"start probe: booting {m.name} ({acc}); artifacts: {m.artifacts}", flush=True)
    with m:
        hot = faults.Hotplug(m)
        bdfs = [hot.address(c.id) for c in topo.controllers]
        try:
            print("start probe: " + spdk.start_probe(m.ssh, tree, bdfs, spdk.driver(topo),
                                                      max(topo.hugepages, spdk.HUGEPAGES)))
        except spdk.AppDidNotStart as e:
            print(f"problem: {e}")
            return 1
    print("spdk check: passed")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    m = _machine(args, persistent=True)
    m.launch()
    if args.spdk_dir:  # mounted as the suites mount it, so the tree's apps run as they would there
        guest.mount_share(m.ssh, "spdk", spdk.MOUNT)
        print(f"SPDK tree {args.spdk_dir} at {spdk.MOUNT} in the guest; LD_LIBRARY_PATH for its apps: "
              f"{spdk_tree.Tree(Path(args.spdk_dir)).guest_lib_path(spdk.MOUNT) or 'none needed (static build)'}")
    print(json.dumps(m.status(), indent=2))
    print(f"ssh: tbctl ssh {m.name}   qmp: tbctl qmp {m.name} query-status   stop: tbctl down {m.name}")
    m.release()
    return 0


@contextmanager
def _attached(name: str, ssh: bool = False) -> Iterator[Machine]:
    """A running VM of another tbctl process, let go of (not stopped) afterwards."""
    m = _attach(name)
    try:
        if ssh:
            m.connect_ssh()
        yield m
    finally:
        m.release()


def cmd_ssh(args: argparse.Namespace) -> int:
    with _attached(args.name) as m:
        if not args.command:  # an interactive shell: OpenSSH, pinned to the image's host key
            assert m.record is not None
            os.execvp("ssh", ["ssh", "-i", str(m.image.client_key), "-p", str(m.record.ssh_port),
                              "-o", f"UserKnownHostsFile={m.image.dir / 'known_hosts'}",
                              "-o", f"HostKeyAlias={image.HOST_KEY_ALIAS}", "-o", "StrictHostKeyChecking=yes",
                              "root@127.0.0.1"])
        res = m.connect_ssh(args.timeout).run(shlex.join(args.command), timeout=args.timeout)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.rc


def cmd_qmp(args: argparse.Namespace) -> int:
    try:
        qargs = json.loads(args.arguments) if args.arguments else None
    except ValueError as e:
        raise ConfigError(f"qmp arguments: not valid JSON: {e}") from None
    with _attached(args.name) as m:
        print(json.dumps(m.qmp.execute(args.command, qargs, timeout=args.timeout), indent=2))
    return 0


def cmd_hotplug(args: argparse.Namespace) -> int:
    with _attached(args.name, ssh=True) as m:
        lat = m.hot_remove(args.ctrl, args.timeout) if args.action == "remove" else m.hot_add(args.ctrl, args.timeout)
        print(f"{args.action} {args.ctrl}: seen by the guest after {lat['guest']:.3f} s")
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """One fault into a running VM; prints what QEMU's NVMe trace showed for it."""
    with _attached(args.name, ssh=True) as m, faults.NvmeTrace(m) as trace:
        if args.fault == "doorbell":
            offset, value = faults.invalid_doorbell(m, args.ctrl, args.kind, args.via)
            print(f"{args.ctrl}: wrote {value:#x} to BAR0+{offset:#x} ({args.kind}, from the {args.via})")
            typ, info = faults.DOORBELL_KINDS[args.kind]
            trace.wait("pci_nvme_enqueue_event", f"type {typ:#x} info {info:#x}", args.timeout)
        else:
            before = faults.bus_master(m, args.ctrl, args.state == "on", args.via)
            print(f"{args.ctrl}: PCI command {before:#06x} -> bus master {args.state} (from the {args.via})")
        for line in trace.lines():  # what a fault is about, not the I/O chatter around it
            if line.startswith(("pci_nvme_ub_", "pci_nvme_err", "pci_nvme_aer", "pci_nvme_enqueue_event")):
                print(f"  trace: {line}")
    return 0


def cmd_qemu(args: argparse.Namespace) -> int:
    """Install a QEMU from Debian into a private prefix, or list the known ones."""
    if args.qemu_cmd == "install":
        print(qemu_install.install(args.source, args.mirror, log=lambda m: print(m, file=sys.stderr)))
        return 0
    on_path = shutil.which(qemu_binary.DEFAULT)
    known = [("PATH", qemu_binary.probe(Path(on_path).resolve()))] if on_path else []
    known += [(name, qemu_binary.probe(binary, name)) for name, binary in qemu_binary.installed().items()]
    for name, q in known:
        print(f"{name:10} {q.version_text:8} {q.path}  ({q.origin})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reaped = registry.reap()
    if reaped:
        print(f"reaped: {', '.join(reaped)}", file=sys.stderr)
    rows = [Machine.attach(r).status() for r in registry.records()]
    if args.json:
        print(json.dumps(rows, indent=2))
    for r in rows if not args.json else []:
        print(f"{r['name']:14} pid {r['pid']:<8} {r['accel']:4} {r['ssh']:22} owner {r['owner']}  {r['artifacts']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    registry.reap()
    names = [r.name for r in registry.records()] if args.all else [args.name]
    if not names or names == [None]:
        raise ConfigError("down: give a VM name or --all")
    for name in names:
        rec = registry.load(name)
        if rec is None:
            raise ConfigError(f"no VM named {name!r}")
        how = Machine.attach(rec).shutdown(graceful=not args.force)
        print(f"{name}: {how}")
    return 0


def known_suites() -> list[str]:
    return sorted(p.stem for p in SUITES.glob("*.py") if not p.name.startswith(("_", "conftest")))


def _suite_paths(names: list[str]) -> list[str]:
    """Suite names (suites/<name>.py, optionally ::test) or paths to suite files -> pytest args."""
    out = []
    known = known_suites()
    for name in names:
        base, sep, rest = name.partition("::")
        path = SUITES / f"{base}.py" if (SUITES / f"{base}.py").is_file() else Path(base)
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(f"suite {base!r}: no suites/{base}.py and no such file; known suites: {', '.join(known)}")
        out.append(str(path.resolve()) + sep + rest)
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Thin front over pytest: validate, build the image, pick the accelerator, then hand over."""
    paths = _suite_paths(args.suites)
    _, img, acc = _prepare(args)
    run_dir = _artifacts_root() / time.strftime("run-%Y%m%d-%H%M%S")
    results = Path(args.json) if args.json else run_dir / "results.json"
    argv = [*paths, "-p", "orchestrator.pytest_plugin", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
            "--tb-artifacts", str(run_dir), "--tb-accel", acc, "--tb-image", img.manifest["name"],
            "--tb-results", str(results), "-rN"]
    for flag, value in (("--tb-topology", args.topology), ("--tb-timeout", args.timeout), ("-k", args.k),
                        ("--tb-spdk-dir", args.spdk_dir), ("--tb-seed", args.seed), ("--junitxml", args.junit),
                        ("--tb-jitter", args.jitter), ("--tb-qemu", args.qemu)):
        if value is not None:
            argv += [flag, str(value)]
    if args.keep_vm:
        argv.append("--tb-keep-vm")
    if args.snapshot:
        argv.append("--tb-snapshot")
    pytest.main(argv + args.pytest_args)
    try:
        return int(json.loads(results.read_text())["exit_code"])
    except (OSError, ValueError, KeyError):
        print(f"tbctl: the run wrote no results ({results}): incomplete", file=sys.stderr)
        return 2


def cmd_repro(args: argparse.Namespace) -> int:
    """Validate and build once, then hand each run to its own `tbctl run`."""
    _suite_paths([args.target])
    if args.runs < 1 or (args.jobs is not None and args.jobs < 1):
        raise ConfigError("repro: --runs and --jobs must be at least 1")
    topo, img, acc = _prepare(args)
    run_args = ["--accel", acc, "--image", img.manifest["name"]]
    for flag, value in (("--topology", args.topology), ("--timeout", args.timeout), ("--spdk-dir", args.spdk_dir),
                        ("--jitter", args.jitter)):
        if value is not None:
            run_args += [flag, str(Path(value).resolve()) if flag in ("--topology", "--spdk-dir") else str(value)]
    if args.qemu:
        run_args += ["--qemu", str(qemu_binary.current().path)]
    base, sep, rest = args.target.partition("::")
    target = args.target if (SUITES / f"{base}.py").is_file() else str(Path(base).resolve()) + sep + rest
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    jobs = args.jobs or repro.default_jobs(topo.memory_mib)
    if not args.cold:
        reason = snapshot.unsupported(topo)
        if reason:
            print(f"repro: cold boot for every run: {reason}", file=sys.stderr)
        else:  # made here once, before the runs, so they all start from it at once
            shares = {"spdk": Path(args.spdk_dir).resolve()} if args.spdk_dir else {}
            saved = snapshot.ensure(topo, img, acc, shares, log=lambda msg: print(f"repro: {msg}", file=sys.stderr))
            print(f"repro: every run starts from the saved guest {saved.dir}", file=sys.stderr)
            run_args.append("--snapshot")
    out = _artifacts_root() / time.strftime("repro-%Y%m%d-%H%M%S")
    print(f"repro: {args.target}, {args.runs} runs, {jobs} at once, seed {seed}, artifacts {out}", file=sys.stderr)
    r = repro.Repro(target, args.runs, jobs, seed, out, run_args, args.until_fail)
    runs = r.execute()
    repro.summary(runs, args.runs, seed, print)
    failed = [x for x in runs if x.failed]
    if failed:
        bundle = r.bundle(min(failed, key=lambda x: x.index))
        print(f"repro bundle: {bundle} (replay: {bundle / 'replay.sh'})")
    return 1 if failed else 0


class _Lister:
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        module = None
        for item in session.items:
            mod = getattr(item, "module", None)
            if mod is not module:
                module = mod
                doc = (mod.__doc__ or "").strip().splitlines()
                print(f"{Path(str(item.fspath)).stem}: {doc[0] if doc else ''}")
            doc = (getattr(item, "function", None).__doc__ or "").strip().splitlines()  # type: ignore[union-attr]
            print(f"  {item.name:40} {doc[0] if doc else ''}")


def cmd_list(args: argparse.Namespace) -> int:
    paths = _suite_paths(args.suites or known_suites())
    rc = pytest.main([*paths, "--collect-only", "-o", "addopts=", "-p", "no:terminal", "-p", "no:cacheprovider",
                      "-p", "orchestrator.pytest_plugin"], plugins=[_Lister()])
    return 0 if rc == 0 else 2


def cmd_smoke(args: argparse.Namespace) -> int:
    """Boot, hot-remove and re-add every hot-pluggable controller, shut down: the core job."""
    m = _machine(args, persistent=False)
    print(f"booting {m.name} ({m.accel}); artifacts: {m.artifacts}", flush=True)
    with m:
        t = m.timings
        print(f"ready: SSH after {t['ready'] - t['launched']:.2f} s, NVMe after {t['nvme'] - t['launched']:.2f} s")
        for ctrl in m.topology.controllers:
            if ctrl.hotplug:
                removed, added = m.hot_remove(ctrl.id), m.hot_add(ctrl.id)
                print(f"{ctrl.id}: removal seen by the guest in {removed['guest']:.3f} s, "
                      f"insertion in {added['guest']:.3f} s")
    print(f"passed; artifacts: {m.artifacts}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tbctl", description="QEMU-based VM test-bed for NVMe and SPDK testing.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tbctl {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def boot_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--topology", "-t", metavar="FILE", help="machine/NVMe topology (TOML); default: built-in")
        sp.add_argument("--name", help="VM name (default: generated)")
        sp.add_argument("--accel", choices=topology.ACCELS, help="override the topology's accelerator")
        sp.add_argument("--boot-timeout", type=float, default=90, metavar="S", help="deadline to SSH-ready (90)")
        sp.add_argument("--mirror", help="Debian mirror URL for an image build (default: the host's apt source)")
        image_opts(sp)

    def image_opts(sp: argparse.ArgumentParser, tree_required: bool = False) -> None:
        sp.add_argument("--image", metavar="RECIPE", choices=recipe_names(),
                        help=f"guest image recipe (default: the topology's, else {image.SPDK_IMAGE} with "
                             f"--spdk-dir, else {image.DEFAULT_IMAGE}): {', '.join(recipe_names())}")
        sp.add_argument("--spdk-dir", metavar="DIR", required=tree_required,
                        help="built SPDK tree, shared read-only into the guest (checked against the image first)")
        sp.add_argument("--qemu", metavar="PATH", help=f"QEMU binary (default: ${qemu_binary.ENV}, the topology's "
                                                       "`qemu`, else PATH's; tbctl qemu list)")

    sp = sub.add_parser("image", help="build or list guest images")
    isub = sp.add_subparsers(dest="image_cmd", required=True)
    b = isub.add_parser("build", help="build the image of a recipe (a no-op when cached)")
    b.add_argument("recipe", nargs="?", default=image.DEFAULT_IMAGE)
    b.add_argument("--mirror", help="Debian mirror URL (default: the host's apt source)")
    isub.add_parser("list", help="list cached images")
    sh = isub.add_parser("shell", help="a shell (or -- CMD) in an image's userland on the host, e.g. to build "
                                       "a tree for the guest; image read-only, --bind dirs read-write, no network")
    sh.add_argument("--image", default=image.DEFAULT_IMAGE, help=f"recipe (default {image.DEFAULT_IMAGE})")
    sh.add_argument("--bind", action="append", default=[], metavar="DIR",
                    help="a host directory, read-write at the same path inside (repeatable; the first is the cwd)")
    sh.add_argument("--timeout", type=float, default=4 * 3600, metavar="S",
                    help="deadline for CMD; killed with all it started (default 4 h; none for a shell)")
    sh.add_argument("--mirror", help="Debian mirror URL for an image build (default: the host's apt source)")
    sh.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command (default: bash -l)")
    sp.set_defaults(fn=cmd_image)

    sp = sub.add_parser("qemu", help="QEMU binaries: install Debian's backports into a private prefix, list")
    qsub = sp.add_subparsers(dest="qemu_cmd", required=True)
    q = qsub.add_parser("install", help="Debian's QEMU from SOURCE into tbctl's cache (the host's QEMU untouched); "
                                        "prints the binary, then usable as --qemu SOURCE")
    q.add_argument("source", choices=qemu_install.SOURCES)
    q.add_argument("--mirror", help="Debian mirror URL (default: the host's apt source)")
    qsub.add_parser("list", help="every known QEMU: name, version, path, origin")
    sp.set_defaults(fn=cmd_qemu)

    sp = sub.add_parser("spdk", help="SPDK trees: check one against a guest image before running it")
    ssub = sp.add_subparsers(dest="spdk_cmd", required=True)
    c = ssub.add_parser("check", help="the tree's apps' libraries, symbol versions and CPU features against the "
                                      "image, then one app started in a booted guest")
    c.add_argument("--topology", "-t", metavar="FILE", help="machine/NVMe topology (TOML); default: built-in")
    c.add_argument("--accel", choices=topology.ACCELS, help="override the topology's accelerator")
    c.add_argument("--boot-timeout", type=float, default=90, metavar="S", help="deadline to SSH-ready (90)")
    c.add_argument("--mirror", help="Debian mirror URL for an image build (default: the host's apt source)")
    c.add_argument("--no-start", action="store_true", help="only read files; boot nothing")
    image_opts(c, tree_required=True)
    c.set_defaults(fn=cmd_spdk)

    sp = sub.add_parser("up", help="boot a VM that outlives this command")
    boot_opts(sp)
    sp.set_defaults(fn=cmd_up)

    def run_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--topology", "-t", metavar="FILE", help="machine/NVMe topology (TOML); default: built-in")
        sp.add_argument("--accel", choices=topology.ACCELS, help="override the topology's accelerator")
        sp.add_argument("--timeout", type=float, metavar="S", help="per-test deadline, overriding the suites' own")
        image_opts(sp)
        sp.add_argument("--jitter", type=float, metavar="S",
                        help="hotplug faults fire after a seeded delay below S seconds (default 0.3; 0: at once)")
        sp.add_argument("--mirror", help="Debian mirror URL for an image build (default: the host's apt source)")

    sp = sub.add_parser("run", help="run suites (pytest underneath); exit 0 passed, 1 failed, 2 infrastructure")
    sp.add_argument("suites", nargs="+", metavar="SUITE", help="suite name (see `tbctl list`), SUITE::TEST, or a file")
    sp.add_argument("-k", metavar="EXPR", help="select tests, as pytest -k")
    run_opts(sp)
    sp.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    sp.add_argument("--json", metavar="FILE", help="write results.json here (default: in the run's artifacts)")
    sp.add_argument("--keep-vm", action="store_true", help="leave the VMs running (tbctl status / down)")
    sp.add_argument("--seed", type=int, help="replay the fault timing and random choices of an earlier run")
    sp.add_argument("--snapshot", action="store_true",
                    help="start machines from a saved ready guest (made once, cached), not by booting")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("repro", help="run a test many times (parallel VMs): failure rate, signatures, bundle")
    sp.add_argument("target", metavar="SUITE[::TEST]", help="suite name, SUITE::TEST, or a file")
    sp.add_argument("-n", "--runs", type=int, required=True, help="how many runs")
    sp.add_argument("--until-fail", action="store_true", help="stop starting runs after the first failure")
    sp.add_argument("--jobs", "-j", type=int, help="runs at once (default: from host cores and memory)")
    sp.add_argument("--seed", type=int, help="the repro's seed: the same seed replays the same run schedules")
    sp.add_argument("--cold", action="store_true", help="boot every run's machine instead of restoring a saved guest")
    run_opts(sp)
    sp.set_defaults(fn=cmd_repro)

    sp = sub.add_parser("list", help="list suites and their tests")
    sp.add_argument("suites", nargs="*", metavar="SUITE")
    sp.set_defaults(fn=cmd_list)

    sp = sub.add_parser("smoke", help="boot, hot-remove/add each controller, shut down")
    boot_opts(sp)
    sp.set_defaults(fn=cmd_smoke)

    sp = sub.add_parser("ssh", help="run a command in a VM (no command: interactive ssh)")
    sp.add_argument("name")
    sp.add_argument("command", nargs=argparse.REMAINDER, help="after --")
    sp.add_argument("--timeout", type=float, default=60)
    sp.set_defaults(fn=cmd_ssh)

    sp = sub.add_parser("qmp", help="send one QMP command to a VM")
    sp.add_argument("name")
    sp.add_argument("command")
    sp.add_argument("arguments", nargs="?", help="JSON object")
    sp.add_argument("--timeout", type=float, default=10)
    sp.set_defaults(fn=cmd_qmp)

    sp = sub.add_parser("hotplug", help="hot-remove or hot-add an NVMe controller")
    sp.add_argument("name")
    sp.add_argument("action", choices=("remove", "add"))
    sp.add_argument("ctrl")
    sp.add_argument("--timeout", type=float, default=10)
    sp.set_defaults(fn=cmd_hotplug)

    sp = sub.add_parser("inject", help="inject a fault into a running VM (doorbell, bus-master; see also hotplug)")
    sp.add_argument("name")
    fsub = sp.add_subparsers(dest="fault", required=True)
    f = fsub.add_parser("doorbell", help="an invalid doorbell write")
    f.add_argument("ctrl")
    f.add_argument("kind", choices=list(faults.DOORBELL_KINDS))
    f = fsub.add_parser("bus-master", help="clear or restore PCI bus mastering")
    f.add_argument("ctrl")
    f.add_argument("state", choices=("off", "on"))
    for f in fsub.choices.values():
        f.add_argument("--via", choices=faults.VIAS, default="host", help="qtest socket (host) or /dev/mem (guest)")
        f.add_argument("--timeout", type=float, default=10)
    sp.set_defaults(fn=cmd_inject)

    sp = sub.add_parser("status", help="list running VMs (and reap orphans)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser("down", help="shut a VM down (poweroff -> quit -> SIGTERM -> SIGKILL)")
    sp.add_argument("name", nargs="?")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--force", action="store_true", help="skip the guest poweroff")
    sp.set_defaults(fn=cmd_down)
    return p


def _terminate(signum: int, frame: Any) -> None:
    # As Ctrl-C: unwinds through every `with Machine` and `finally`, and pytest (tbctl run)
    # stops the session, tears its VMs down and still writes results.json.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:  # `tbctl run SUITE -- PYTEST-ARGS`
        extra, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    args = parser().parse_args(argv)
    args.pytest_args = extra
    if args.cmd == "ssh" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.fn(args)
    except TbctlError as e:
        print(f"tbctl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tbctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
