"""tbctl qemu: install Debian's QEMU into a private prefix, list the known ones."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.cli.argtypes import mirror_url
from orchestrator.vm import qemu_binary, qemu_install


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("qemu", help="QEMU binaries: install Debian's backports into a private prefix, list")
    qsub = sp.add_subparsers(dest="qemu_cmd", required=True)
    q = qsub.add_parser("install", help="Debian's QEMU from SOURCE into tbctl's cache (the host's QEMU untouched); "
                                        "prints the binary, then usable as --qemu SOURCE")
    q.add_argument("source", choices=qemu_install.SOURCES)
    q.add_argument("--mirror", type=mirror_url, help="Debian mirror URL (default: the host's apt source)")
    qsub.add_parser("list", help="every known QEMU: name, version, path, origin")
    sp.set_defaults(fn=cmd_qemu)


def cmd_qemu(args: argparse.Namespace) -> int:
    if args.qemu_cmd == "install":
        print(qemu_install.install(args.source, args.mirror, log=lambda m: print(m, file=sys.stderr)))
        return 0
    on_path = shutil.which(qemu_binary.DEFAULT)
    known = [("PATH", qemu_binary.probe(Path(on_path).resolve()))] if on_path else []
    known += [(name, qemu_binary.probe(binary, name)) for name, binary in qemu_binary.installed().items()]
    for name, q in known:
        print(f"{name:10} {q.version_text:8} {q.path}  ({q.origin})")
    return 0
