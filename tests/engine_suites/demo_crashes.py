"""Deliberate crashes: how tbctl finds and titles them (driven by tests/test_engine.py)."""

from __future__ import annotations

import time

from orchestrator.machines import Machine

TIMEOUT = 100  # KVM seconds; x3 under TCG: a panic must end its test long before this


def test_app_asserts(machine: Machine) -> None:
    """An app fails an assertion and aborts (glibc's __assert_fail, as SPDK's asserts do); the
    test itself notices nothing: the crash is found in its output and its core dump."""
    machine.ssh.run("python3 -c \"import ctypes; ctypes.CDLL(None).__assert_fail("
                    "b'qpair->poll_group', b'nvme_rdma.c', 2098, b'nvme_rdma_qpair_destroy')\"", timeout=60)


def test_kernel_warning(machine: Machine) -> None:
    """A WARNING report in the kernel log makes a passing test "guest crashed". The Debian kernel
    has neither LKDTM nor fault injection to raise a real WARN on demand, so the report (one
    nvme_core could print) is written into the kernel log through /dev/kmsg, the path a real
    WARN takes from printk on."""
    report = ["------------[ cut here ]------------",
              "WARNING: CPU: 0 PID: 412 at drivers/nvme/host/core.c:4712 nvme_remove_namespaces+0x14e/0x160 "
              "[nvme_core]",
              "RIP: 0010:nvme_remove_namespaces+0x14e/0x160 [nvme_core]",
              "---[ end trace 0000000000000000 ]---"]
    for line in report:
        machine.ssh.run(f"echo '<4>{line}' > /dev/kmsg", timeout=10, check=True)
    assert machine.ssh.run("true", timeout=10).ok


def test_task_hangs(machine: Machine) -> None:
    """A task stuck in the kernel (writing to a frozen filesystem) past the hung-task timeout: the
    report ends the test; the stuck kernel's stacks (sysrq w and l, asked for on the keyboard while
    it is stuck) are in the test's artifacts, and the machine is not handed on."""
    machine.ssh.run("echo 3 > /proc/sys/kernel/hung_task_timeout_secs && mkfs.ext4 -q -F /dev/nvme0n1 && "
                    "mkdir -p /mnt/frozen && mount /dev/nvme0n1 /mnt/frozen && fsfreeze -f /mnt/frozen",
                    timeout=60, check=True)
    machine.ssh.run("touch /mnt/frozen/x </dev/null >/dev/null 2>&1 & sleep 600", timeout=900)  # ended by the report


def test_sysrq_panic(machine: Machine) -> None:
    """The guest kernel panics under a running command: the test ends within seconds, not at its
    deadline, with the panic's title (console) and GUEST_PANICKED (pvpanic)."""
    machine.ssh.run("echo c > /proc/sysrq-trigger; sleep 600", timeout=900)


def test_guest_stops_answering(machine: Machine) -> None:
    """The guest goes quiet while QEMU runs it (suspend-to-idle with nothing to wake it, as still as
    a guest whose vCPUs lost their timer interrupts): the test's wait fails, and the outcome is the
    guest's, found by asking it, not the wait's."""
    machine.ssh.start("sleep 1; echo freeze > /sys/power/state", timeout=60)
    time.sleep(3)
    machine.ssh.run("true", timeout=5)


def test_the_next_test_gets_a_live_machine(machine: Machine) -> None:
    """After a panic the module's machine is booted again."""
    assert machine.ssh.run("uname -r", timeout=10).ok
