"""Live VMs: tbctl up, smoke, ssh, qmp, hotplug, inject, status, down."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from orchestrator import faults, guest, image, spdk
from orchestrator.cli.common import attached, boot_opts, image_opts, new_machine
from orchestrator.errors import ConfigError
from orchestrator.machines import Machine
from orchestrator.spdk.tree import Tree
from orchestrator.vm import registry


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    for name, fn, help in (("up", cmd_up, "boot a VM that outlives this command"),
                           ("smoke", cmd_smoke, "boot, hot-remove/add each controller, shut down")):
        sp = add(name, help=help)
        boot_opts(sp)
        sp.add_argument("--name", help="VM name (default: generated)")
        image_opts(sp)
        sp.set_defaults(fn=fn)

    sp = add("ssh", help="run a command in a VM (no command: interactive ssh)")
    sp.add_argument("name")
    sp.add_argument("command", nargs=argparse.REMAINDER, help="after --")
    sp.add_argument("--timeout", type=float, default=60)
    sp.set_defaults(fn=cmd_ssh)

    sp = add("qmp", help="send one QMP command to a VM")
    sp.add_argument("name")
    sp.add_argument("command")
    sp.add_argument("arguments", nargs="?", help="JSON object")
    sp.add_argument("--timeout", type=float, default=10)
    sp.set_defaults(fn=cmd_qmp)

    sp = add("hotplug", help="hot-remove or hot-add an NVMe controller")
    sp.add_argument("name")
    sp.add_argument("action", choices=("remove", "add"))
    sp.add_argument("ctrl")
    sp.add_argument("--timeout", type=float, default=10)
    sp.set_defaults(fn=cmd_hotplug)

    sp = add("inject", help="inject a fault into a running VM (doorbell, bus-master; see also hotplug)")
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

    sp = add("status", help="list running VMs (and reap orphans)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_status)

    sp = add("down", help="shut a VM down (poweroff -> quit -> SIGTERM -> SIGKILL)")
    sp.add_argument("name", nargs="?")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--force", action="store_true", help="skip the guest poweroff")
    sp.set_defaults(fn=cmd_down)


def cmd_up(args: argparse.Namespace) -> int:
    m = new_machine(args, persistent=True)
    m.launch()
    if args.spdk_dir:  # mounted as the suites mount it, so the tree's apps run as they would there
        guest.mount_share(m.ssh, "spdk", spdk.MOUNT)
        print(f"SPDK tree {args.spdk_dir} at {spdk.MOUNT} in the guest; LD_LIBRARY_PATH for its apps: "
              f"{Tree(Path(args.spdk_dir)).guest_lib_path(spdk.MOUNT) or 'none needed (static build)'}")
    print(json.dumps(m.status(), indent=2))
    print(f"ssh: tbctl ssh {m.name}   qmp: tbctl qmp {m.name} query-status   stop: tbctl down {m.name}")
    m.release()
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """Boot, hot-remove and re-add every hot-pluggable controller, shut down: the core job."""
    m = new_machine(args, persistent=False)
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


def cmd_ssh(args: argparse.Namespace) -> int:
    with attached(args.name) as m:
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
    with attached(args.name) as m:
        print(json.dumps(m.qmp.execute(args.command, qargs, timeout=args.timeout), indent=2))
    return 0


def cmd_hotplug(args: argparse.Namespace) -> int:
    with attached(args.name, ssh=True) as m:
        lat = m.hot_remove(args.ctrl, args.timeout) if args.action == "remove" else m.hot_add(args.ctrl, args.timeout)
        print(f"{args.action} {args.ctrl}: seen by the guest after {lat['guest']:.3f} s")
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    """One fault into a running VM; prints what QEMU's NVMe trace showed for it."""
    with attached(args.name, ssh=True) as m, faults.NvmeTrace(m) as trace:
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
