"""The tbctl command: its parser, made of one module per command group, and its entry point."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Any

from orchestrator import __version__
from orchestrator.cli.argtypes import Parser
from orchestrator.errors import TbctlError

# Each command group's module (orchestrator/cli/NAME.py, its `register(add)`) and the commands it
# adds: a command imports its own module only, so `tbctl ssh` costs a round trip, not loading what
# the other commands need (paramiko, pytest, jinja2); --help and a mistyped command load them all.
GROUPS: dict[str, tuple[str, ...]] = {
    "images": ("image",), "qemu": ("qemu",), "spdk": ("spdk",), "runs": ("run", "repro", "list"),
    "bisect": ("bisect",), "reports": ("merge", "report"), "ci": ("ci-template",),
    "vms": ("up", "smoke", "qmp", "hotplug", "inject", "status", "down"), "sshcfg": ("ssh-config", "ssh-proxy", "ssh"),
    "vagrant": ("vagrant",),
}

EPILOG = """examples:
  tbctl run sw_hotplug                   run a suite on the default guest; summary + artifacts
  tbctl run sw_hotplug -k kernel --junit out.xml
  tbctl run sw_hotplug -- -x --pdb          anything after -- goes to pytest
  tbctl repro sw_hotplug::test_orderly_hotplug -n 50 --jobs 2     a flake: rate, signatures, bundle
  tbctl list                             suites and their tests
  tbctl run --all --shard 2/4 --durations last/results.json --json r2.json    one of 4 CI machines
  tbctl merge r1.json r2.json r3.json r4.json --junit all.xml --html all.html --baseline last/results.json
  tbctl report results.json              the HTML report of a run: rows, timelines, console excerpts
  tbctl ci-template k8s --shards 4       an Indexed Job of 4 shards and their merge (gitlab, github, jenkins)
  tbctl image build                      build (or reuse) the default guest image
  tbctl image shell --image bookworm-spdk --bind ~/spdk -- make -j2    build a tree for the guest
  tbctl image box                        the image as a vagrant-libvirt box (the top-level Vagrantfile's)
  tbctl spdk check --spdk-dir ~/spdk     will the tree start in the guest? (files, then a start probe)
  tbctl up --name dev                    boot a VM that stays up; prints its SSH and QMP endpoints
  tbctl ssh dev -- 'nvme list | head'   run a command in it (OpenSSH; one string for its shell)
  ssh -F <(tbctl ssh-config) tbctl-dev   plain OpenSSH, scp, rsync, VS Code (ssh-config --write)
  tbctl qmp dev query-pci                any QMP command, arguments as JSON
  tbctl hotplug dev remove nvme0         device_del + wait until the guest lost it
  tbctl hotplug dev add nvme0            device_add + wait until the guest has its namespace
  tbctl inject dev doorbell nvme0 sq-tail-too-big     invalid doorbell write (qtest), trace shown
  tbctl inject dev bus-master nvme0 off --via guest
  tbctl up --bed pair --name nf          two VMs (nf-target, nf-host) joined by their network
  tbctl inject nf-target nic-remove fabric0          and nic-add, link-down, link-up
  tbctl inject nf-target app-signal nvmf_tgt KILL    or vm-pause / vm-resume
  tbctl smoke                            boot, hot-remove and hot-add every controller, shut down
  tbctl status ; tbctl down dev | --all
"""


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """tbctl's parser: `command`'s group alone when it is one, else every group."""
    p = Parser(prog="tbctl", description="QEMU-based VM test-bed for NVMe and SPDK testing.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tbctl {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    groups = [g for g, commands in GROUPS.items() if command in commands] or list(GROUPS)
    for group in groups:
        importlib.import_module(f"orchestrator.cli.{group}").register(sub.add_parser)
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
    args = parser(argv[0] if argv else None).parse_args(argv)
    args.pytest_args = extra
    if args.cmd == "ssh" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code: int = args.fn(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # its reader went away (`tbctl ssh-config | head -1`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush stays quiet too
        return 128 + signal.SIGPIPE
    except TbctlError as e:
        print(f"tbctl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tbctl: interrupted", file=sys.stderr)
        return 130
