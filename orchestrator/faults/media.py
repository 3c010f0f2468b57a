"""Media errors on a namespace, made on the device side: a blkdebug node put at run time between
the namespace's raw node and its file (blockdev-add over the named file node, then blockdev-reopen
of the raw node onto it; QEMU 6.1 and later), whose inject-error rules fail the reads or writes of
an LBA range with EIO. QEMU's NVMe controller completes such a command as Unrecovered Read Error
(SCT 2h / SC 81h) or Write Fault (2h / 80h), without DNR (hw/nvme/ctrl.c, nvme_aio_err), so a
host may retry it: `once` fails each block once and a retry reads it; `always` keeps failing.
media-clear puts the file back under the raw node; a new media-error replaces the namespace's
last one (blkdebug's rules are fixed when its node is made)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from orchestrator.errors import ConfigError
from orchestrator.faults.injectable import Injectable
from orchestrator.faults.kind import CTRL, NS, Kind, Param, Timing, namespace
from orchestrator.faults.timing import Timed
from orchestrator.vm.qmp import file_node, media_node

EIO = 5
MAX_BLOCKS = 1024  # blkdebug matches a rule against one sector: one rule per block of the range
SECTOR = 512  # blkdebug's sector, whatever the namespace's block size
# The blkdebug event the raw node raises on its file before each read or write, and its I/O type.
OPS = {"read": (("read_aio", "read"),), "write": (("write_aio", "write"),),
       "any": (("read_aio", "read"), ("write_aio", "write"))}
TIMES = ("always", "once")


def lba_range(text: str) -> str:
    """`A` or `A-B` (first and last block, inclusive), at most MAX_BLOCKS of them, as `A-B`."""
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()) or int(last or first) < int(first):
        raise argparse.ArgumentTypeError(f"{text!r}: must be LBA or FIRST-LAST (e.g. 0-7)")
    if int(last or first) - int(first) >= MAX_BLOCKS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_BLOCKS} blocks")
    return f"{int(first)}-{int(last or first)}"


def _clear(m: Injectable, node: str, timeout: float) -> bool:
    """The namespace's file back under its raw node; whether a media fault was there."""
    if media_node(node) not in m.qmp.block_nodes(timeout):
        return False
    m.qmp.execute("blockdev-reopen", {"options": [{"driver": "raw", "node-name": node, "file": file_node(node)}]},
                  timeout)
    m.qmp.execute("blockdev-del", {"node-name": media_node(node)}, timeout)
    return True


def insert(m: Injectable, node: str, rules: list[dict[str, object]], timeout: float) -> None:
    """A blkdebug node with `rules` between raw node `node` and its file."""
    options: dict[str, object] = {"driver": "blkdebug", "node-name": media_node(node), "image": file_node(node)}
    if rules:  # QEMU refuses an empty list
        options["inject-error"] = rules
    m.qmp.execute("blockdev-add", options, timeout)
    m.qmp.execute("blockdev-reopen", {"options": [{"driver": "raw", "node-name": node, "file": media_node(node)}]},
                  timeout)


def _media_error(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    ctrl, nsid, ns = namespace(m, a)
    first, last = map(int, a["lba"].split("-"))
    blocks = (ns.size_mib << 20) // ns.block_size
    if last >= blocks:
        raise ConfigError(f"{ctrl.id} namespace {nsid}: LBA {last} is past its last block ({blocks - 1})")
    rules = [{"event": event, "iotype": iotype, "errno": EIO, "sector": lba * ns.block_size // SECTOR,
              "once": a["times"] == "once"}
             for lba in range(first, last + 1) for event, iotype in OPS[a["op"]]]
    node = ctrl.node(nsid)
    timed = t.timed()
    timed.delay(f"media-error {ctrl.id} ns {nsid} LBA {first}-{last} {a['op']}")
    _clear(m, node, t.timeout)
    insert(m, node, rules, t.timeout)
    status = {"read": "Unrecovered Read Error", "write": "Write Fault", "any": "Unrecovered Read Error / Write Fault"}
    return (f"{ctrl.id} namespace {nsid}: {a['op']} of LBA {first}-{last} ({ns.block_size}-byte blocks) fail "
            f"{a['times']} with {status[a['op']]}"), timed


def _media_clear(m: Injectable, a: Mapping[str, str], t: Timing) -> tuple[str, Timed]:
    ctrl, nsid, _ = namespace(m, a)
    timed = t.timed()
    timed.delay(f"media-clear {ctrl.id} ns {nsid}")
    was = _clear(m, ctrl.node(nsid), t.timeout)
    return f"{ctrl.id} namespace {nsid}: " + ("media errors cleared" if was else "had no media errors"), timed


KINDS = (
    Kind("media-error", "fail a namespace's reads or writes of an LBA range with EIO (blkdebug under its drive): "
         "Unrecovered Read Error / Write Fault to the host, no DNR; replaces its last media-error",
         (CTRL, Param("lba", "FIRST-LAST blocks, inclusive (or one LBA)", required=True, check=lba_range), NS,
          Param("op", "which commands fail", tuple(OPS), default="read"),
          Param("times", "each block fails once (a retry reads it), or always", TIMES, default="always")),
         _media_error),
    Kind("media-clear", "a namespace's media errors gone: its file back under its drive", (CTRL, NS), _media_clear),
)
