"""Crash titles: every sample of the corpus (tests/crash_corpus/) gets its expected title."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.report import crash

CORPUS = sorted((Path(__file__).parent / "crash_corpus").glob("*.txt"))


def sample(path: Path) -> tuple[str, str]:
    first, text = path.read_text().split("\n", 1)
    assert first.startswith("TITLE: "), f"{path.name}: first line must be 'TITLE: ...'"
    return first[len("TITLE: "):], text


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_title(path: Path) -> None:
    want, text = sample(path)
    assert crash.title(text) == (None if want == "none" else want)


def test_titles_are_stable_across_runs() -> None:
    """Addresses, pids, CPUs and timestamps change from run to run; the title must not."""
    _, text = sample(Path(__file__).parent / "crash_corpus" / "gpf-run-timers.txt")
    other = (text.replace("812.", "97.").replace("CPU: 0 PID: 0", "CPU: 1 PID: 4711")
             .replace("0x1b7/0x2b0", "0x1c3/0x2b0").replace("dead000000000122", "dead000000000100"))
    assert crash.title(other) == crash.title(text) == "general protection fault in __run_timers"


def test_one_report_is_one_finding() -> None:
    """A page fault prints BUG, Oops and the panic that follows: one report, fatal."""
    _, text = sample(Path(__file__).parent / "crash_corpus" / "gpf-run-timers.txt")
    found = crash.kernel_findings(text)
    assert [f.title for f in found] == ["general protection fault in __run_timers"] and found[0].fatal
    warn = crash.kernel_findings(sample(Path(__file__).parent / "crash_corpus" / "warning-nvme-core.txt")[1])
    assert [(f.title, f.fatal) for f in warn] == [("WARNING in nvme_remove_namespaces", False)]


def test_core_dump_backtrace_title() -> None:
    bt = """
Thread 2 (Thread 0x7f3a1bfff6c0 (LWP 1772)):
#0  0x00007f3a1c8f2f16 in epoll_wait (epfd=3, events=0x7f3a1bffe9a0) at ../sysdeps/unix/sysv/linux/epoll_wait.c:30
#1  0x00007f3a1c9a1b12 in eal_intr_thread_main (arg=<optimized out>) at ../lib/eal/linux/eal_interrupts.c:1033

Thread 1 (Thread 0x7f3a1c2b7a80 (LWP 1771)):
#0  __pthread_kill_implementation (threadid=<optimized out>, signo=signo@entry=6, no_tid=no_tid@entry=0) at ./nptl/pthread_kill.c:44
#1  0x00007f3a1c88ff1f in __pthread_kill_internal (signo=6, threadid=<optimized out>) at ./nptl/pthread_kill.c:78
#2  0x00007f3a1c840fb2 in __GI_raise (sig=sig@entry=6) at ../sysdeps/posix/raise.c:26
#3  0x00007f3a1c82b472 in __GI_abort () at ./stdlib/abort.c:79
#4  0x00007f3a1c82b395 in __assert_fail_base (fmt=0x7f3a1c99fa90 "%s%s%s:%u: %s%sAssertion `%s' failed.") at ./assert/assert.c:92
#5  0x00007f3a1c839eb2 in __GI___assert_fail (assertion=0x55d0 "qpair->poll_group") at ./assert/assert.c:101
#6  0x000055d0c1a2b6e1 in nvme_rdma_qpair_destroy (qpair=0x2000003d4cc0) at nvme_rdma.c:2098
#7  0x000055d0c1a2c011 in nvme_rdma_ctrlr_delete_io_qpair (ctrlr=<optimized out>) at nvme_rdma.c:2380
"""
    f = crash.core_finding(6, "/mnt/spdk/build/examples/reconnect", bt)
    assert f.title == "SIGABRT in nvme_rdma_qpair_destroy"


def test_exit_status_and_qemu() -> None:
    assert crash.exit_finding(139, "exec stdbuf -oL /mnt/spdk/build/examples/hotplug -t 5").title == "SIGSEGV in hotplug"
    assert crash.exit_finding(137, "sleep 600") is None  # KILL is how tbctl ends a command, not a crash
    assert crash.exit_finding(1, "false") is None
    assert crash.qemu_findings("", -11)[0].title == "QEMU died of SIGSEGV"
    assert "last QMP commands:\n01:02:03 device_del" in crash.qemu_findings("", -11, commands=[
        '01:02:03 device_del {"id": "nvme0"}'])[0].evidence
    assert crash.qemu_findings("qemu-system-x86_64: terminating on signal 15\n", 0)[0].title == \
        "QEMU exited unexpectedly (status 0)"
    assert crash.qmp_findings([{"event": "GUEST_PANICKED", "data": {"action": "pause"}}])[0].fatal


def test_one_title_per_app_crash() -> None:
    out = ("python3: nvme_rdma.c:2098: nvme_rdma_qpair_destroy: Assertion `qpair->poll_group' failed.\n"
           "Aborted (core dumped)\n")
    found = crash.app_findings(out) + [crash.exit_finding(134, "python3 -c x"),  # type: ignore[list-item]
                                       crash.Finding("SIGABRT in ffi_call", "core", False, "")]
    assert [f.title for f in crash.one_per_app_crash(found)] == [
        "Assertion `qpair->poll_group' failed in nvme_rdma_qpair_destroy"]
    segv = [crash.exit_finding(139, "./hotplug"), crash.Finding("SIGSEGV in nvme_pcie_qpair_process", "core", False, "")]
    assert [f.title for f in crash.one_per_app_crash(segv)] == ["SIGSEGV in nvme_pcie_qpair_process"]  # type: ignore[arg-type]


def test_a_qemu_core_is_titled_by_qemus_own_first_frame() -> None:
    from orchestrator.vm import qemu_core

    bt = (Path(__file__).parent / "qemu_cores" / "sigsegv-in-slirp-send.gdb.txt").read_text()
    frames = qemu_core.crashing_frames(bt, Path("/usr/bin/qemu-system-x86_64"))
    # libc's and libslirp's frames are not QEMU's; QEMU's first has no symbol: a file offset
    assert [(f.name, f.where, f.own) for f in frames[2:5]] == [
        ("??", "libslirp.so.0.4.0+0xb8a1", False), ("??", "libslirp.so.0.4.0+0x1304e", False),
        ("??", "qemu-system-x86_64+0x6396a0", True)]
    assert ("qemu_net_queue_send_iov", "qemu-system-x86_64+0x634df8", True) in \
        [(f.name, f.where, f.own) for f in frames]
    assert crash.qemu_findings("", -11, bt, frames)[0].title == \
        "QEMU SIGSEGV at qemu-system-x86_64+0x6396a0 under qemu_net_queue_send_iov"
    named = [qemu_core.Frame("__libc_send", "libc.so.6+0x1", False), qemu_core.Frame("nvme_process_db", "x+0x2", True)]
    assert crash.qemu_findings("", -11, "bt", named)[0].title == "QEMU SIGSEGV in nvme_process_db"
    assert crash.qemu_findings("", -6, "bt", [])[0].title == "QEMU died of SIGABRT"


def test_blocked_tasks_from_sysrq_w() -> None:
    dmesg = """[   12.0] nvme nvme0: pci function 0000:01:00.0
[   40.1] sysrq: Show Blocked State
[   40.2] task:kworker/u4:1  state:D stack:0     pid:55    ppid:2      flags:0x00004000
[   40.3] Workqueue: kacpi_hotplug acpi_hotplug_work_fn
[   40.4] Call Trace:
[   40.5]  <TASK>
[   40.6]  __schedule+0x34d/0x9e0
[   40.7]  schedule+0x5a/0xd0
[   40.8]  uio_unregister_device+0x99/0x120 [uio]
[   40.9]  remove+0x1c/0x30 [uio_pci_generic]
[   41.0]  </TASK>
[   41.1] task:bash            state:S stack:0     pid:99    ppid:1      flags:0x00000000
"""
    assert crash.blocked_tasks(dmesg) == "kworker/u4:1 in uio_unregister_device"
    assert crash.blocked_tasks("[ 1.0] sysrq: Show Blocked State\n") == "none"
    assert crash.blocked_tasks("") == "no sysrq-w dump in the kernel log"


def test_a_line_the_console_is_in_the_middle_of_is_let_finish(tmp_path: Path) -> None:
    """The crash watch may end a test mid-line; the title must come from the whole panic line."""
    import socket
    import threading
    import time
    from types import SimpleNamespace

    from orchestrator.engine import findings
    from orchestrator.vm.console import Console

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "console.sock"))
    server.listen(1)
    console = Console(tmp_path / "console.sock")
    console.connect(timeout=5, alive=lambda: True)
    peer, _ = server.accept()
    try:
        peer.sendall(b"sysrq: Trigger a crash\r\nKernel panic - not syncing: sy")
        console.wait_for([re.compile("sy$")], timeout=5)
        threading.Timer(0.3, peer.sendall, [b"srq triggered crash\r\n"]).start()
        started = time.monotonic()
        found = findings._kernel_findings(SimpleNamespace(console=console), 0)
        assert [f.title for f in found] == ["kernel panic: sysrq triggered crash"]
        assert time.monotonic() - started < findings.LINE_WAIT
    finally:
        peer.close()
        console.close()
        server.close()


def test_qemus_death_is_read_once_whichever_threads_ask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's watcher and a test's QMP call can notice QEMU's death at once: its core is read
    (and removed) once, and both get the same title (seen: the second read found no core and raised)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from test_argv import fake_image

    from orchestrator.config import topology
    from orchestrator.machines import Machine

    m = Machine(topology.default(), fake_image(tmp_path), tmp_path / "art", name="t1", accel="tcg")
    reads, started = [], threading.Barrier(4)

    def read_core() -> list[crash.Finding]:
        reads.append(1)
        time.sleep(0.2)  # gdb on the core takes a while: long enough for every caller to arrive
        return [crash.Finding("QEMU SIGSEGV in qemu_bh_schedule", "qemu", True, "")]

    def ask(_: int) -> str:
        started.wait()
        return m.qemu_crash()[0].title

    monkeypatch.setattr(m, "_read_crash", read_core)
    with ThreadPoolExecutor(4) as pool:
        titles = set(pool.map(ask, range(4)))
    assert (len(reads), titles) == (1, {"QEMU SIGSEGV in qemu_bh_schedule"})
