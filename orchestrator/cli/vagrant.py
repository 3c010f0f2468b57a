"""tbctl vagrant: what the top-level Vagrantfile asks tbctl for. `config` prints the machines as
JSON (the Vagrantfile reads it at every vagrant command); `prepare` and `clean` make and remove
the files libvirt's QEMU reads, run by the Vagrantfile's triggers before `up` and after `destroy`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator import vagrant
from orchestrator.cli.common import check_tree
from orchestrator.config import topology
from orchestrator.errors import ConfigError
from orchestrator.paths import recipe_names
from orchestrator.vm import qemu_binary


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("vagrant", help="for the top-level Vagrantfile: its machines (config), their files (prepare, clean)")
    vsub = sp.add_subparsers(dest="vagrant_cmd", required=True)
    for cmd, what in (("config", "the machines as JSON"), ("prepare", "make a machine's files (before vagrant up)"),
                      ("clean", "remove a machine's files (after vagrant destroy)")):
        p = vsub.add_parser(cmd, help=what)
        if cmd != "config":
            p.add_argument("name", help="the machine (its topology's machine.name)")
        p.add_argument("--project", required=True, metavar="DIR", help="the Vagrantfile's directory")
        p.add_argument("--topology", "-t", action="append", default=[], metavar="FILE", type=topology.ref,
                       help="a machine's topology (TOML) or a built-in one's name, again for more machines; "
                            "default: built-in")
        p.add_argument("--image", metavar="RECIPE", choices=recipe_names(), help="guest image recipe")
        p.add_argument("--spdk-dir", metavar="DIR", help="built SPDK tree, shared read-only at /mnt/spdk")
    sp.set_defaults(fn=cmd_vagrant)


def cmd_vagrant(args: argparse.Namespace) -> int:
    tree = Path(args.spdk_dir) if args.spdk_dir else None
    if tree is not None and not tree.is_dir():
        raise ConfigError(f"--spdk-dir {args.spdk_dir}: not a directory")
    ms = vagrant.machines(args.topology, Path(args.project), args.image, tree)
    if args.vagrant_cmd == "config":
        qemu = qemu_binary.select(qemu_binary.DEFAULT)  # what libvirt starts
        for vm in ms:
            topology.check_qemu(vm.topology, qemu)
            if tree is not None:
                check_tree(tree, vm.image, vm.accel)
        json.dump(vagrant.config(ms, tree), sys.stdout, indent=1)
        print()
        return 0
    m = next((x for x in ms if x.name == args.name), None)
    if m is None:
        raise ConfigError(f"no machine {args.name!r}; the topologies name: {', '.join(x.name for x in ms)}")
    if args.vagrant_cmd == "prepare":
        vagrant.prepare(m)
        print(f"{m.name}: kernel, initrd and NVMe backing files in {m.dir}", file=sys.stderr)
        if warning := vagrant.kvm_warning():
            print(f"{m.name}: warning: {warning}", file=sys.stderr)
    elif vagrant.clean(m):
        print(f"{m.name}: removed {m.dir}", file=sys.stderr)
    return 0
