"""Live VMs: tbctl up, smoke, ssh, qmp, hotplug, inject, status, down."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator import guest, spdk
from orchestrator.cli import sshcfg
from orchestrator.cli.argtypes import SECONDS
from orchestrator.cli.common import artifacts_root, attached, boot_opts, image_opts, machine_spec, new_machine, prepare
from orchestrator.config import bed as beds
from orchestrator.errors import ConfigError
from orchestrator.faults import table as fault_table
from orchestrator.faults.kind import Timing
from orchestrator.machines import Machine, environment
from orchestrator.machines import bed as machine_beds
from orchestrator.spdk.tree import Tree
from orchestrator.vm import registry
from orchestrator.vm.machine import check_name, new_name


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
            sp.add_argument("--timings", action="store_true",
                            help="print how long each phase took, from tbctl's start (also in machine.log)")

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

    sp = add("inject", help="inject a fault into a running VM (`tbctl list --faults`: every kind, what it does)")
    sp.add_argument("name")
    fsub = sp.add_subparsers(dest="fault", required=True)
    for kind in fault_table.KINDS.values():
        f = fsub.add_parser(kind.name, help=kind.help)
        kind.add_params(f)
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
    entered = time.monotonic()
    m = new_machine(args, persistent=True)
    m.timings["cli"] = entered
    m.launch()
    if args.spdk_dir:  # mounted as the suites mount it, so the tree's apps run as they would there
        guest.mount_share(m.ssh, "spdk", spdk.MOUNT)
        print(f"SPDK tree {args.spdk_dir} at {spdk.MOUNT} in the guest; LD_LIBRARY_PATH for its apps: "
              f"{Tree(Path(args.spdk_dir)).guest_lib_path(spdk.MOUNT) or 'none needed (static build)'}")
    print(json.dumps(m.status(), indent=2))
    print(f"ssh: tbctl ssh {m.name}   qmp: tbctl qmp {m.name} query-status   stop: tbctl down {m.name}")
    m.release()
    sshcfg.refresh()
    m.timings["handed over"] = time.monotonic()
    table = phases(m.timings)
    m.log("up: " + ", ".join(f"{what} {took:.2f} s" for what, took in table))
    if args.timings:
        width = max(len(what) for what, _ in table)
        for what, took in [*table, ("in all", sum(t for _, t in table))]:
            print(f"{what:<{width}}  {took:6.2f} s", file=sys.stderr)
    return 0


# The phases of `tbctl up`, each ending at a mark of the machine's timings, the first starting with the process.
PHASES = (("tbctl started (Python, imports)", "cli"), ("checks, image, QEMU probe", "launched"),
          ("QEMU start to the guest's sshd", "marker"), ("first SSH command", "ready"),
          ("NVMe controllers in the guest", "nvme"), ("registered, ssh-config", "handed over"))


def phases(timings: dict[str, float]) -> list[tuple[str, float]]:
    """How long each phase of `up` took: from the process's start (the kernel's record of it)
    to each mark in turn; a mark the machine did not reach is left out."""
    ticks, boot_now = os.sysconf("SC_CLK_TCK"), time.clock_gettime(time.CLOCK_BOOTTIME)
    started = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    last = time.monotonic() - (boot_now - started)
    table = []
    for what, mark in PHASES:
        if mark in timings:
            table.append((what, timings[mark] - last))
            last = timings[mark]
    return table


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


def cmd_inject(args: argparse.Namespace) -> int:
    """One fault into a running VM, fired as the fault table fires it; prints what happened."""
    kind = fault_table.KINDS[args.fault]
    with attached(args.name, ssh=kind.ssh) as m:
        said, _ = kind.fire(m, kind.args(args), Timing(timeout=args.timeout))
    print(said)
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
        sshcfg.close_shared(rec)
        how = Machine.attach(rec).shutdown(graceful=not args.force)
        print(f"{name}: {how}")
    sshcfg.refresh()
    return 0
