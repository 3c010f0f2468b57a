"""A controller's admin queue as QEMU sees it, read from the host while the guest is stuck: what
the controller fetched and completed last, and what the host wrote at the head beyond it.

The registers give the queues' size and guest-physical addresses (AQA, ASQ, ACQ); qtest reads
guest memory. The newest completion is where the phase tag flips; its SQ head says how far the
controller consumed the submission queue, so the entry before it is the last command fetched and
the entry at it the next one (fetched only once the host rings the doorbell: the tail itself is
write-only). Behind a vIOMMU the addresses are IOVAs, which qtest cannot follow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ADMIN_OPCODES = {0x00: "Delete I/O SQ", 0x01: "Create I/O SQ", 0x02: "Get Log Page", 0x04: "Delete I/O CQ",
                 0x05: "Create I/O CQ", 0x06: "Identify", 0x08: "Abort", 0x09: "Set Features",
                 0x0A: "Get Features", 0x0C: "Async Event Request", 0x7C: "Doorbell Buffer Config"}
REG_CC, REG_AQA, REG_ASQ, REG_ACQ = 0x14, 0x24, 0x28, 0x30
SQE, CQE = 64, 16


@dataclass(frozen=True)
class Command:
    slot: int
    opcode: int
    cid: int

    def name(self) -> str:
        return f"{ADMIN_OPCODES.get(self.opcode, 'opcode')} ({self.opcode:#04x}, cid {self.cid})"


@dataclass(frozen=True)
class AdminQueue:
    sq_size: int
    sq_head: int | None  # from the newest completion: the next entry the controller will fetch
    last_cid: int | None  # the newest completion's command id and status
    last_status: int | None
    fetched: Command | None  # the entry before sq_head: the last command fetched
    at_head: Command | None  # the entry at sq_head, if the host wrote one there

    def describe(self) -> str:
        if self.sq_head is None:
            return "no admin completion posted yet"
        fetched = f" (last fetched: {self.fetched.name()})" if self.fetched else ""
        nxt = (f"next entry in the queue at the head: {self.at_head.name()}, fetched only once the host rings "
               "the doorbell") if self.at_head else "no entry at the head"
        return (f"admin SQ consumed up to head {self.sq_head} of {self.sq_size}{fetched}; newest completion cid "
                f"{self.last_cid} status {self.last_status:#x}; {nxt}")


def commands(sq: bytes) -> dict[int, Command]:
    """The non-empty entries of a submission queue's memory, by slot."""
    found = {}
    for i in range(len(sq) // SQE):
        e = sq[i * SQE:(i + 1) * SQE]
        if any(e):
            found[i] = Command(i, e[0], struct.unpack_from("<H", e, 2)[0])
    return found


def newest_completion(cq: bytes) -> tuple[int, int, int] | None:
    """(SQ head, command id, status) of the last completion the controller posted."""
    if not any(cq):
        return None  # the queue memory is still as the host zeroed it
    phases = [struct.unpack_from("<H", cq, i * CQE + 14)[0] & 1 for i in range(len(cq) // CQE)]
    # The pass the controller is in wrote from entry 0 on; the newest is the last before the flip.
    last = next((i - 1 for i in range(1, len(phases)) if phases[i] != phases[0]), len(phases) - 1)
    sqhd, _, cid, status = struct.unpack_from("<HHHH", cq, last * CQE + 8)
    return sqhd, cid, status >> 1


def decode(sq: bytes, cq: bytes) -> AdminQueue:
    size, cmds, done = len(sq) // SQE, commands(sq), newest_completion(cq)
    if done is None:
        return AdminQueue(size, None, None, None, None, None)
    head, cid, status = done
    return AdminQueue(size, head, cid, status, cmds.get((head - 1) % size), cmds.get(head % size))
