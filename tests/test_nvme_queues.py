"""Decoding an admin queue's memory: the newest completion by its phase tag, the command fetched
last and the one waiting at the head, including after the completion queue wrapped."""

from __future__ import annotations

import struct

from orchestrator.report import nvme_queues


def sq(entries: dict[int, tuple[int, int]], size: int = 8) -> bytes:
    mem = bytearray(size * nvme_queues.SQE)
    for slot, (opcode, cid) in entries.items():
        struct.pack_into("<BBH", mem, slot * nvme_queues.SQE, opcode, 0, cid)
    return bytes(mem)


def cq(posted: list[tuple[int, int, int]], size: int = 8, phase: int = 1, stale_phase: int | None = None) -> bytes:
    """Completions (sq head, cid, status) from slot 0 with `phase`; later slots keep `stale_phase`."""
    mem = bytearray(size * nvme_queues.CQE)
    for i in range(size):
        if i < len(posted):
            sqhd, cid, status = posted[i]
            struct.pack_into("<IIHHHH", mem, i * nvme_queues.CQE, 0, 0, sqhd, 0, cid, status << 1 | phase)
        elif stale_phase is not None:
            struct.pack_into("<IIHHHH", mem, i * nvme_queues.CQE, 0, 0, 7, 0, 99, stale_phase)
    return bytes(mem)


def test_the_hang_shape_a_create_cq_written_but_never_fetched() -> None:
    q = nvme_queues.decode(sq({0: (0x06, 1), 1: (0x7C, 2), 2: (0x05, 3)}), cq([(1, 1, 0), (2, 2, 0)]))
    assert (q.sq_head, q.last_cid, q.last_status) == (2, 2, 0)
    assert q.fetched == nvme_queues.Command(1, 0x7C, 2) and q.at_head == nvme_queues.Command(2, 0x05, 3)
    assert q.describe() == ("admin SQ consumed up to head 2 of 8 (last fetched: Doorbell Buffer Config (0x7c, "
                            "cid 2)); newest completion cid 2 status 0x0; next entry in the queue at the head: "
                            "Create I/O CQ (0x05, cid 3), fetched only once the host rings the doorbell")


def test_after_the_completion_queue_wrapped() -> None:
    # second pass: phase 0 from slot 0 to 2, slots 3.. still hold the first pass's phase 1
    q = nvme_queues.decode(sq({i: (0x02, i) for i in range(8)}), cq([(4, 10, 0), (5, 11, 0), (6, 12, 2)],
                                                                  phase=0, stale_phase=1))
    assert (q.sq_head, q.last_cid, q.last_status) == (6, 12, 2) and q.fetched is not None and q.fetched.slot == 5


def test_nothing_posted_yet() -> None:
    assert nvme_queues.decode(sq({0: (0x06, 1)}), cq([])).describe() == "no admin completion posted yet"
