"""The live-VM registry and orphan reaping, with stand-in processes instead of QEMU."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from orchestrator.vm import registry
from orchestrator.vm.registry import Record


def sleeper(*args: str) -> subprocess.Popen[bytes]:
    # The run dir path on its command line makes it look like "the QEMU of that run dir".
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


def dead_process() -> tuple[int, int]:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    start = registry.start_time(p.pid)
    p.wait()
    assert start is not None
    return p.pid, start


def make(name: str, pid: int | None, owner: tuple[int, int] | None) -> Record:
    run_dir = registry.vms_dir() / name
    run_dir.mkdir()
    rec = Record(name=name, run_dir=str(run_dir), artifacts="/tmp", image="/tmp", topology="x", accel="tcg",
                 ssh_port=1, pid=pid, pid_start=registry.start_time(pid) if pid else None,
                 owner_pid=owner[0] if owner else None, owner_start=owner[1] if owner else None)
    registry.save(rec)
    return rec


def test_start_time_distinguishes_reused_pids() -> None:
    pid, start = dead_process()
    assert not registry.alive(pid, start)
    assert registry.alive(1, registry.start_time(1))
    assert not registry.alive(1, 12345678)


def test_reap_kills_orphans_and_keeps_owned_and_persistent_vms(private_state: Path) -> None:
    vms = registry.vms_dir()
    orphan_qemu = sleeper(str(vms / "orphan"))
    owned_qemu = sleeper(str(vms / "owned"))
    persistent_qemu = sleeper(str(vms / "up"))
    me = (registry.os.getpid(), registry.start_time(registry.os.getpid()))
    try:
        make("orphan", orphan_qemu.pid, dead_process())
        make("owned", owned_qemu.pid, me)  # type: ignore[arg-type]
        make("up", persistent_qemu.pid, None)
        make("gone", dead_process()[0], me)  # type: ignore[arg-type]
        t0 = time.monotonic()
        reaped = registry.reap()
        assert sorted(reaped) == ["gone", "orphan"]
        assert orphan_qemu.wait(5) is not None and time.monotonic() - t0 < 10
        assert owned_qemu.poll() is None and persistent_qemu.poll() is None
        assert sorted(r.name for r in registry.records()) == ["owned", "up"]
        assert not (vms / "orphan").exists() and not (vms / "gone").exists()
    finally:
        for p in (orphan_qemu, owned_qemu, persistent_qemu):
            p.kill()
            p.wait()


def test_a_recycled_pid_is_not_killed() -> None:
    """A record whose pid now belongs to an unrelated process (no run dir in its cmdline)."""
    stranger = sleeper()
    try:
        rec = make("stale", stranger.pid, dead_process())
        assert not rec.qemu_alive()
        assert registry.reap() == ["stale"]
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_kill_escalates_to_sigkill() -> None:
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ok', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ok\n"
    registry.kill(stubborn.pid, registry.start_time(stubborn.pid), grace=0.5)
    assert stubborn.wait(5) == -9
