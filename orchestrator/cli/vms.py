"""Live VMs: tbctl up, smoke, ssh, qmp, hotplug, inject, status, down."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import faults, guest, spdk
from orchestrator.cli import sshcfg
from orchestrator.cli.common import (
    SECONDS,
    artifacts_root,
    attached,
    boot_opts,
    image_opts,
    machine_spec,
    new_machine,
    prepare,
)
from orchestrator.config import bed as beds
from orchestrator.errors import ConfigError
from orchestrator.machines import Machine, environment
from orchestrator.machines import bed as machine_beds
from orchestrator.spdk.tree import Tree
from orchestrator.vm import registry
from orchestrator.vm.machine import check_name, new_name

NIC_FAULTS = {"nic-remove": "pull a bed machine's NIC (QMP device_del + netdev_del, or --via guest)",
              "nic-add": "put a pulled NIC back on its network, with its address",
              "link-down": "set a NIC's link down (QMP set_link): the NIC stays, the carrier goes",
              "link-up": "set a NIC's link up again"}


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    for name, fn, help in (("up", cmd_up, "boot a VM (or a bed's VMs) that outlives this command"),
                           ("smoke", cmd_smoke, "boot, hot-remove/add each controller, shut down")):
        sp = add(name, help=help)
        boot_opts(sp)
        sp.add_argument("--name", help="VM name (default: generated); a bed's VMs are NAME-ROLE")
        image_opts(sp)
        sp.set_defaults(fn=fn)
        if name == "up":
            sp.add_argument("--bed", metavar="NAME|FILE", help="boot a bed's machines, joined by its networks "
                                                               f"(built-in: {', '.join(beds.BUILTIN)}; or a file)")

    sp = add("qmp", help="send one QMP command to a VM")
    sp.add_argument("name")
    sp.add_argument("command")
    sp.add_argument("arguments", nargs="?", help="JSON object")
    sp.add_argument("--timeout", type=SECONDS, default=10)
    sp.set_defaults(fn=cmd_qmp)

    sp = add("hotplug", help="hot-remove or hot-add an NVMe controller")
    sp.add_argument("name")
    sp.add_argument("action", choices=("remove", "add"))
    sp.add_argument("ctrl")
    sp.add_argument("--timeout", type=SECONDS, default=10)
    sp.set_defaults(fn=cmd_hotplug)

    sp = add("inject", help="inject a fault into a running VM (doorbell, bus-master, a bed's NIC, its "
                            "target app or the whole VM; see also hotplug)")
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
    for fault, help in NIC_FAULTS.items():
        f = fsub.add_parser(fault, help=help)
        f.add_argument("nic", help="the NIC's id in the bed (e.g. fabric0)")
        if fault in ("nic-remove", "nic-add"):
            f.add_argument("--via", choices=faults.NIC_VIAS, default="qmp",
                           help="QEMU pulls it (device_del) or the guest removes it from its PCI bus (sysfs, "
                                "as SPDK's device_removal.sh) and rescans")
    f = fsub.add_parser("app-signal", help="signal every process of a program in the guest (a target killed)")
    f.add_argument("program", help="its name, as pidof finds it (e.g. nvmf_tgt)")
    f.add_argument("signal", choices=faults.STOP_SIGNALS)
    fsub.add_parser("vm-pause", help="pause the whole VM (QMP stop): a node that hangs, nothing closed")
    fsub.add_parser("vm-resume", help="resume a paused VM (QMP cont)")
    for f in fsub.choices.values():
        f.add_argument("--timeout", type=SECONDS, default=10)
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
    if args.bed:
        return _up_bed(args)
    m = new_machine(args, persistent=True)
    m.launch()
    if args.spdk_dir:  # mounted as the suites mount it, so the tree's apps run as they would there
        guest.mount_share(m.ssh, "spdk", spdk.MOUNT)
        print(f"SPDK tree {args.spdk_dir} at {spdk.MOUNT} in the guest; LD_LIBRARY_PATH for its apps: "
              f"{Tree(Path(args.spdk_dir)).guest_lib_path(spdk.MOUNT) or 'none needed (static build)'}")
    print(json.dumps(m.status(), indent=2))
    print(f"ssh: tbctl ssh {m.name}   qmp: tbctl qmp {m.name} query-status   stop: tbctl down {m.name}")
    m.release()
    sshcfg.refresh()
    return 0


def _up_bed(args: argparse.Namespace) -> int:
    """A bed's machines, booted together, each registered as NAME-ROLE and left running."""
    if args.topology:
        raise ConfigError("up: --bed and --topology: a bed's file holds each machine's topology; give one of them")
    bed = beds.by_ref(args.bed)
    for topo in bed.machines.values():
        environment.check(topo, args.qemu)
    name = args.name or new_name()
    for role in bed.machines:
        if registry.load(check_name(f"{name}-{role}")) is not None:
            raise ConfigError(f"up: a VM named {name}-{role} exists already (tbctl down {name}-{role})")
    env = prepare(machine_spec(args), args.mirror)
    machines = machine_beds.boot(bed, env.image, env.accel, artifacts_root() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                 env.shares, args.boot_timeout, name=name, persistent=True)
    for role, m in machines.items():
        nics = ", ".join(f"{n.id} {n.address} on {n.network}" for n in m.topology.nics)
        print(f"{m.name}: {role}, ssh 127.0.0.1:{m.record.ssh_port if m.record else '?'}; {nics}")
        m.release()
    first = next(iter(machines.values()))
    nic = first.topology.nics[0].id if first.topology.nics else "NIC"
    print(f"faults: tbctl inject {first.name} nic-remove {nic} | nic-add | link-down | link-up; "
          f"app-signal PROGRAM TERM|KILL|INT; vm-pause | vm-resume")
    print(f"stop: tbctl down {' '.join(m.name for m in machines.values())}")
    sshcfg.refresh()
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


def _inject_target(m: Machine, args: argparse.Namespace) -> None:
    """A network or target fault: a bed machine's NIC, an app signalled, the VM paused."""
    if args.fault in NIC_FAULTS:
        link = faults.NicFault(m, args.nic)
        if args.fault == "nic-remove":
            event = link.remove(args.timeout, args.via)
            print(f"{args.nic}: pulled; " + (f"the guest removed PCI device {event['pci']}" if args.via == "guest"
                                             else f"DEVICE_DELETED {event.get('data', {}).get('device', args.nic)}"))
        elif args.fault == "nic-add":
            print(f"{args.nic}: back as {link.add(max(args.timeout, 30), args.via)} with {link.nic.address}")
        else:
            (link.down if args.fault == "link-down" else link.up)()
            print(f"{args.nic}: link {args.fault.removeprefix('link-')}")
    elif args.fault == "app-signal":
        pids = faults.Stop(m).program(args.program, args.signal, args.timeout)
        print(f"{args.program}: SIG{args.signal} to pid {', '.join(map(str, pids))}")
    else:
        stop = faults.Stop(m)
        (stop.pause if args.fault == "vm-pause" else stop.resume)()
        print(f"{m.name}: {m.qmp.execute('query-status', timeout=args.timeout)['status']}")


def cmd_inject(args: argparse.Namespace) -> int:
    """One fault into a running VM; for a register fault, prints what QEMU's NVMe trace showed."""
    if args.fault not in ("doorbell", "bus-master"):
        with attached(args.name, ssh=args.fault not in ("vm-pause", "vm-resume")) as m:
            _inject_target(m, args)
        return 0
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
    if args.all == bool(args.name):
        raise ConfigError("down: give a VM name or --all (not both)")
    names = [r.name for r in registry.records()] if args.all else [args.name]
    if not names:
        print("down --all: no VMs are up; nothing to do")
        return 0
    for name in names:
        rec = registry.load(name)
        if rec is None:
            raise ConfigError(f"no VM named {name!r}")
        how = Machine.attach(rec).shutdown(graceful=not args.force)
        print(f"{name}: {how}")
    sshcfg.refresh()
    return 0
