"""Tasks that outlived SIGKILL, read from what the guest printed of them (its /proc stat lines and
kernel stacks; the sample is a real 6.1 guest's dd reading a suspended device-mapper device)."""

from __future__ import annotations

from orchestrator.report import stuck_tasks
from orchestrator.report.stuck_tasks import StuckTask

DD = """task 211 (dd) D 1 209 209 0 -1 4194304 61 0 2 0 2 0 0 0 20 0 1 0 476 2600960 233 18446744073709551615
  [<0>] submit_bio_wait+0x7b/0xc0
  [<0>] __blkdev_direct_IO_simple+0x12c/0x270
  [<0>] blkdev_read_iter+0x112/0x190
  [<0>] vfs_read+0x23c/0x310
  [<0>] ksys_read+0x6b/0xf0
  [<0>] do_syscall_64+0x5d/0xb0
  [<0>] entry_SYSCALL_64_after_hwframe+0x6e/0xd8
"""
ZOMBIE = "task 209 (sh -c (x)) Z 1 209 209 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 475 0 0\n"
NO_STACK = "task 212 (dd) D 1 209 209 0 -1 4194304 61 0 2 0 2 0 0 0 20 0 1 0 476 2600960 233\n"


def test_a_task_in_d_state_is_named_with_the_frames_that_say_what_it_waits_for() -> None:
    (dd,) = stuck_tasks.parse(ZOMBIE + DD, settled="Z")
    assert (dd.pid, dd.comm, dd.state, len(dd.frames)) == (211, "dd", "D", 7)
    assert dd.waits_in == ("__blkdev_direct_IO_simple", "blkdev_read_iter", "vfs_read")  # not submit_bio_wait
    assert stuck_tasks.describe([dd]) == "dd 211 (D) in __blkdev_direct_IO_simple <- blkdev_read_iter <- vfs_read"


def test_tasks_stuck_in_the_same_place_are_one_entry_and_a_missing_stack_is_said() -> None:
    twin = StuckTask(213, "dd", "D", stuck_tasks.parse(DD, "Z")[0].frames)
    tasks = stuck_tasks.parse(DD + NO_STACK, "Z") + [twin]
    assert stuck_tasks.describe(tasks) == ("dd 211, 213 (D) in __blkdev_direct_IO_simple <- blkdev_read_iter <- "
                                           "vfs_read; dd 212 (D) with no kernel stack")


def test_settled_tasks_are_not_stuck() -> None:
    assert stuck_tasks.parse(ZOMBIE, settled="Z") == []
    assert [t.state for t in stuck_tasks.parse(ZOMBIE + DD, settled="TtZ")] == ["D"]
    assert stuck_tasks.parse("", settled="Z") == []



def test_places_say_each_place_once_in_one_order_without_pids() -> None:
    """A failure's first line: runs stuck the same way read the same, however many tasks sat where."""
    dd = stuck_tasks.parse(DD, "Z")[0]
    fio = StuckTask(9, "fio", "D", ("exit_aio", "__mmput", "do_exit"))
    assert stuck_tasks.places([fio, dd, StuckTask(10, "fio", "D", fio.frames)]) == stuck_tasks.places([dd, fio]) == (
        "dd (D) in __blkdev_direct_IO_simple <- blkdev_read_iter <- vfs_read; fio (D) in exit_aio <- __mmput <- do_exit")
