"""tbctl spdk check: will a tree start in the guest? Its files first, then one of its apps."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import faults, spdk
from orchestrator.cli.common import artifacts_root, boot_opts, image_opts, machine_spec, resolve
from orchestrator.machines import Machine
from orchestrator.spdk.tree import Tree


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("spdk", help="SPDK trees: check one against a guest image before running it")
    ssub = sp.add_subparsers(dest="spdk_cmd", required=True)
    c = ssub.add_parser("check", help="the tree's apps' libraries, symbol versions and CPU features against the "
                                      "image, then one app started in a booted guest")
    boot_opts(c)
    c.add_argument("--no-start", action="store_true", help="only read files; boot nothing")
    image_opts(c, tree_required=True)
    c.set_defaults(fn=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    env = resolve(machine_spec(args), args.mirror)
    topo, img, acc = env.topology, env.image, env.accel
    tree = Tree(Path(args.spdk_dir))
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
    m = Machine(topo, img, artifacts_root() / f"spdk-check-{time.strftime('%Y%m%d-%H%M%S')}", accel=acc,
                persistent=False, shares=env.shares, boot_timeout=args.boot_timeout)
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
