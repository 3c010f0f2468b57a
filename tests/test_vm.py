"""VM tests: the real guest under QEMU (TCG here). Marked `vm`; run alone with `-m vm`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import faults, guest
from orchestrator.config import topology
from orchestrator.config.topology import Controller
from orchestrator.errors import DeadlineError, QMPError
from orchestrator.image import MARKER_READY, SIGNAL_TRACE, Image
from orchestrator.machines import Machine
from orchestrator.report import signals
from orchestrator.vm import accel, registry
from orchestrator.vm.machine import DEFAULT_BOOT_TIMEOUT

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parent.parent


def test_boot_ssh_hotplug_and_clean_shutdown(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    art = tmp_path / "art"
    m = Machine(topology.default(), guest_image, art, accel=accelerator)
    with m:
        assert m.ssh.run("uname -r", timeout=10, check=True).stdout.strip() == guest_image.manifest["kernel"]
        # bash's process substitution, as SPDK's scripts use it, and the /dev/std* names
        assert m.ssh.run("bash -c 'cat <(echo sub) && echo out >/dev/stdout && echo err >/dev/stderr'",
                         timeout=10, check=True).stdout.split() == ["sub", "out"]
        seen = guest.nvme_state(m.ssh)
        assert set(seen) == {"TBCTL0001", "TBCTL0002"} and all(c["block"] for c in seen.values())
        run_dir = m.run_dir
        assert oct(run_dir.stat().st_mode & 0o777) == "0o700" and (run_dir / "qmp.sock").exists()
        for ctrl in ("nvme0", "nvme1"):
            removed = m.hot_remove(ctrl)
            assert "TBCTL0001" if ctrl == "nvme0" else "TBCTL0002" not in guest.nvme_state(m.ssh)
            added = m.hot_add(ctrl)
            assert removed["guest"] < 10 and added["guest"] < 10
        after = guest.nvme_state(m.ssh)
        assert all(after[s]["state"] == "live" and after[s]["block"] for s in ("TBCTL0001", "TBCTL0002"))
        # the re-added namespace takes I/O
        dev = "/dev/" + after["TBCTL0001"]["block"][0]
        m.ssh.run(f"dd if=/dev/urandom of={dev} bs=4k count=16 oflag=direct && sync", timeout=30, check=True)
        pid = m.record.pid  # type: ignore[union-attr]
    assert m.shutdown() == "already exited"
    assert not registry.alive(pid, None) and not run_dir.exists()
    assert MARKER_READY in (art / "console.log").read_text()
    events = [json.loads(line)["event"] for line in (art / "qmp-events.jsonl").read_text().splitlines()]
    assert events.count("DEVICE_DELETED") == 2
    assert "qemu-system-x86_64" in (art / "qemu.argv").read_text()
    assert "shut down: guest poweroff" in (art / "machine.log").read_text()
    assert "uname -r" in (art / "commands.log").read_text()


def test_guest_command_past_its_deadline_is_killed(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    topo = topology.parse({"nvme": []}, "no-nvme")
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator) as m:
        t0 = time.monotonic()
        with pytest.raises(DeadlineError, match="did not finish within 2 s and was killed: sleep 600"):
            m.ssh.run("sleep 600", timeout=2)
        assert time.monotonic() - t0 < 2 + 5
        assert m.ssh.run("pgrep -x sleep", timeout=10).rc == 1  # nothing left running in the guest
        # SIGINT goes where a terminal's Ctrl-C would: the command's process group, not a child that
        # started a session of its own (fio's jobs do, so that only fio's main process takes it)
        own = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); "  # INT not ignored, as in fio
               "open('/run/own-session', 'w').close(); time.sleep(301)")
        proc = m.ssh.start(f"setsid python3 -c \"{own}\" >/dev/null 2>&1 & exec sleep 303", timeout=60, label="c")
        proc.wait_pid(10)
        m.ssh.run("while [ ! -e /run/own-session ]; do sleep 0.1; done", timeout=30, check=True)
        proc.signal("INT")
        assert proc.wait(10).rc == -1  # sleep died of it, and `timeout` passes a death by signal on
        assert m.ssh.run("pgrep -x sleep", timeout=10).rc == 1  # the command's own group took it
        assert m.ssh.run("pkill -f 'time[.]sleep[(]301'", timeout=10).rc == 0  # the other session did not
        # the image's signal trace saw it, with its sender's kernel stack
        sent = signals.parse(m.ssh.run(f"cat {SIGNAL_TRACE}/trace", timeout=10, check=True).stdout)
        to_sleep = [s for s in sent if s.name == "SIGINT" and s.target == "sleep"]
        assert len(to_sleep) == 1 and to_sleep[0].delivered and "__x64_sys_kill" in to_sleep[0].stack, sent
        with pytest.raises(QMPError) as e:  # QEMU's refusal keeps its parts
            m.qmp.execute("device_del", {"id": "nope"})
        assert (e.value.command, e.value.arguments) == ("device_del", {"id": "nope"})
        assert e.value.error_class in ("DeviceNotFound", "GenericError") and "nope" in e.value.desc


def test_a_command_stuck_in_the_kernel_is_killed_and_says_where(guest_image: Image, accelerator: str,
                                                                 tmp_path: Path) -> None:
    """I/O to a suspended device-mapper device never completes: the reader sleeps in D state,
    outlives SIGKILL, and the deadline names it and its kernel frames, not just "still running"."""
    topo = topology.parse({"nvme": []}, "no-nvme")
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator) as m:
        # mknodes: /dev/mapper/stall now, not when udev (started in the background at boot) gets to it
        m.ssh.run("dmsetup create stall --table '0 2048 zero' && dmsetup mknodes stall && dmsetup suspend stall",
                  timeout=30, check=True)
        proc = m.ssh.start("dd if=/dev/mapper/stall of=/dev/null bs=4k count=1 iflag=direct", timeout=60,
                           label="dd from a suspended device")
        proc.wait_pid(10)
        with pytest.raises(DeadlineError) as e:
            proc.wait(3)
        (dd,) = proc.stuck
        assert (dd.comm, dd.state) == ("dd", "D") and dd.waits_in, dd
        where = f"(D) in {' <- '.join(dd.waits_in)}"
        assert str(e.value) == ("dd from a suspended device: still running 3 s after it was told to stop (killed; "
                                f"stuck in the kernel: dd {where})\nstuck tasks: dd {dd.pid} {where}")
        m.ssh.run("dmsetup resume stall && dmsetup remove stall", timeout=30, check=True)
        assert m.ssh.run(f"while [ -e /proc/{dd.pid} ]; do sleep 0.2; done", timeout=30).rc == 0


def test_guest_not_ready_by_its_deadline_is_killed_with_console_tail(guest_image: Image, accelerator: str,
                                                                       tmp_path: Path) -> None:
    m = Machine(topology.default(), guest_image, tmp_path / "art", accel=accelerator, boot_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(DeadlineError) as err:
        m.launch()
    assert time.monotonic() - t0 < 1.0 + 15
    msg = str(err.value)
    assert "guest not ready (console marker) within 1 s" in msg and "--- console tail" in msg
    assert not m.qemu_alive() and not m.run_dir.exists()


def test_a_kernel_panic_at_boot_gets_one_more_boot(guest_image: Image, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.vm import machine as machine_mod

    # An init that does not exist: the kernel panics before the sshd marker, on every boot.
    monkeypatch.setattr(machine_mod, "TCG_KERNEL_ARGS", machine_mod.TCG_KERNEL_ARGS + " rdinit=/nonexistent")
    m = Machine(topology.default(), guest_image, tmp_path / "art", accel="tcg", boot_timeout=60)
    with pytest.raises(machine_mod.KernelBrokeAtBoot, match="guest boot failed: Kernel panic - not syncing"):
        m.launch()
    log = (tmp_path / "art" / "machine.log").read_text()
    assert "boot 1 failed (" in log and "booting again, that boot's console is in console-boot1.log" in log
    assert "Kernel panic - not syncing" in (tmp_path / "art" / "console-boot1.log").read_text()
    assert "Kernel panic - not syncing" in (tmp_path / "art" / "console.log").read_text()  # the second boot's
    assert "boot 2 failed" not in log and not m.qemu_alive() and not m.run_dir.exists()


class Stalled(Machine):
    """A guest whose vCPUs are stopped at once on its first `stalled` boots: it prints nothing."""

    stalled = 1

    def _spawn(self) -> None:
        super()._spawn()
        if self.stalled:
            self.stalled -= 1
            self.qmp.execute("stop")


def test_a_silent_boot_gets_one_more_with_the_early_console(guest_image: Image, tmp_path: Path) -> None:
    m = Stalled(topology.default(), guest_image, tmp_path / "art", accel="tcg", boot_timeout=20)
    with m:
        assert m.ssh.run("cat /proc/cmdline", timeout=10, check=True).stdout.strip().endswith(
            " earlyprintk=serial,ttyS0,115200 ignore_loglevel")
    log = (tmp_path / "art" / "machine.log").read_text()
    assert "boot 1 failed (" in log and "the guest printed nothing on its console" in log, log
    assert (tmp_path / "art" / "console-boot1.log").read_text() == ""
    assert "[    0.000000] printk: debug: ignoring loglevel setting." in (tmp_path / "art" / "console.log").read_text()

    never = Stalled(topology.default(), guest_image, tmp_path / "art2", accel="tcg", boot_timeout=5)
    never.stalled = 2
    with pytest.raises(DeadlineError, match=r"no output from the firmware \(kernel early console on\)"):
        never.launch()
    assert not never.qemu_alive() and not never.run_dir.exists()


class StuckAfter(Machine):
    """A guest whose vCPUs stop once its console printed `line`, on its first `stuck` boots: it
    printed something (or its sshd listens, and slirp takes the TCP connection), then nothing
    more, and answers no SysRq."""

    stuck = 1
    line: str | None = r"TBCTL-BOOT initrd [0-9.]+, root mounted [0-9.]+\r?\n"  # None: not on the console

    def _stuck_now(self) -> bool:
        """Whether this boot gets stuck (counted down); one that does not gets the usual deadline
        (a short one failed beside a busy VM)."""
        if self.stuck:
            self.stuck -= 1
            return True
        self.boot_timeout = DEFAULT_BOOT_TIMEOUT
        return False

    def _spawn(self) -> None:
        super()._spawn()
        if self.line is not None and self._stuck_now():
            assert self.console is not None
            self.console.wait_for([re.compile(self.line)], 60)
            self.qmp.execute("stop")


class StuckAfterSshd(StuckAfter):
    line = r"TBCTL-READY sshd [0-9.]+"


def booted_again(cls: type[StuckAfter], image: Image, art: Path) -> str:
    """A machine of `cls` stuck on its first boot, ready on its second: its machine.log."""
    m = cls(topology.default(), image, art, accel="tcg", boot_timeout=20)
    with m:
        assert m.ssh.run("true", timeout=10).rc == 0
    return (art / "machine.log").read_text()


def test_a_boot_stuck_after_printing_is_asked_what_it_does_and_gets_one_more(guest_image: Image,
                                                                             tmp_path: Path) -> None:
    log = booted_again(StuckAfter, guest_image, tmp_path / "art")
    assert re.search(r"boot 1 failed \(vm-\w+: guest not ready \(console marker\) within 20 s: vm-\w+: guest boot "
                     r"stuck after its last line 'TBCTL-BOOT initrd [0-9.]+, root mounted [0-9.]+'; the kernel did "
                     r"not answer SysRq\); booting again", log), log
    assert "TBCTL-BOOT initrd" in (tmp_path / "art" / "console-boot1.log").read_text()

    never = StuckAfter(topology.default(), guest_image, tmp_path / "art2", accel="tcg", boot_timeout=8)  # both stuck
    never.stuck = 2
    with pytest.raises(DeadlineError, match=r"the last thing it printed: 'TBCTL-BOOT initrd .*'; the kernel did not "
                                            r"answer SysRq\n--- console tail") as stuck:
        never.launch()
    assert (stuck.value.machine, stuck.value.stage) == (never.name, "console marker")  # fields, not only words
    assert not never.qemu_alive() and not never.run_dir.exists()


def test_a_guest_whose_sshd_is_up_but_never_answers_gets_one_more_boot(guest_image: Image, tmp_path: Path) -> None:
    """CI, stop 36: a fresh guest's sshd marker at 2.2 s, then 57 s of key exchanges that never
    finished; the machine was never ready and its test an infrastructure error."""
    log = booted_again(StuckAfterSshd, guest_image, tmp_path / "art")
    assert re.search(r"boot 1 failed \(vm-\w+: guest not ready \(first SSH command\) within 20 s: vm-\w+: guest "
                     r"gives no SSH session though its sshd was up: ssh 127\.0\.0\.1:\d+: no session within [0-9.]+ s "
                     r"\(.*\); the kernel did not answer SysRq\); booting again", log), log
    assert "TBCTL-READY sshd" in (tmp_path / "art" / "console-boot1.log").read_text()
    cpus = (tmp_path / "art" / "cpus-boot1.txt").read_text()  # what QEMU held of each vCPU then
    assert "CPU#1" in cpus and "dumping local APIC state for CPU 1" in cpus and "ISR" in cpus, cpus


class StuckAfterSession(StuckAfter):
    """A guest whose vCPUs stop once it gave its first SSH session, on its first boot: the first
    command waits for a guest that does nothing."""

    line = None

    def _plug(self, wanted: list[Controller]) -> dict[str, str | None]:
        if self._stuck_now():
            self.qmp.execute("stop")
        return super()._plug(wanted)


def test_a_guest_that_gives_a_session_and_runs_no_command_gets_one_more_boot(guest_image: Image,
                                                                              tmp_path: Path) -> None:
    """CI, stop 39 (QEMU 10.0): a fresh guest's sshd and udev markers, a session, then its first
    command hung 56 s with the VM idle; the machine was never ready and its test an infrastructure
    error."""
    log = booted_again(StuckAfterSession, guest_image, tmp_path / "art")
    assert re.search(r"boot 1 failed \(vm-\w+: guest not ready \(first SSH command\) within 20 s: vm-\w+: guest "
                     r"runs no command though it gave an SSH session: (guest command hung past [0-9.]+ s|ssh 127\.0\.0\.1:\d+: "
                     r"cannot start 'true': Timeout opening channel)", log), log


def test_sigkilled_tbctl_leaves_nothing_after_the_next_start(guest_image: Image, accelerator: str,
                                                              tmp_path: Path) -> None:
    script = (f"import sys, time; from pathlib import Path; from orchestrator import image;"
              f"from orchestrator.config import topology; from orchestrator.machines import Machine;"
              f"m = Machine(topology.default(), image.ensure(), Path({str(tmp_path / 'art')!r}), accel={accelerator!r});"
              f"m.launch(); print(m.name, m.record.pid, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO, env=os.environ.copy())
    try:
        assert proc.stdout is not None
        name, pid = proc.stdout.readline().split()
        rec = registry.load(name.decode())
        assert rec is not None and rec.qemu_alive()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert registry.reap() == [name.decode()]  # the next tbctl start reaps the orphan
        assert not rec.qemu_alive() and not Path(rec.run_dir).exists() and registry.records() == []
    finally:
        proc.kill()
        proc.wait()


def test_cli_up_ssh_qmp_hotplug_status_down(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    env = dict(os.environ, TBCTL_ARTIFACTS=str(tmp_path / "art"))

    def tbctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=REPO)

    up = tbctl("up", "--name", "clitest", "--accel", accelerator, "--timings")
    try:
        assert up.returncode == 0, up.stderr
        assert '"name": "clitest"' in up.stdout
        # each phase of up, from the process's start, in order, adding up to the whole
        table = [re.fullmatch(r"(.+?)\s+(\d+\.\d\d) s", ln) for ln in up.stderr.strip().splitlines()[-7:]]
        assert all(table) and [m[1] for m in table if m] == [
            "tbctl started (Python, imports)", "checks, image, QEMU probe", "QEMU start to the guest's sshd",
            "first SSH command", "NVMe controllers in the guest", "registered, ssh-config", "in all"], up.stderr
        took = [float(m[2]) for m in table if m]
        # each figure is rounded to 0.01 s on its own: their sum may miss the whole by 0.005 s per figure
        assert all(t >= 0 for t in took) and abs(sum(took[:-1]) - took[-1]) <= 0.005 * len(took) + 1e-9, took
        assert "clitest" in tbctl("status").stdout
        r = tbctl("ssh", "clitest", "--", "cat", "/sys/class/nvme/nvme0/serial")
        assert r.returncode == 0 and r.stdout.strip() in ("TBCTL0001", "TBCTL0002")
        # every later ssh shares the first one's connection: its socket in the VM's private run
        # directory, its process gone with `down` (below)
        rec = registry.load("clitest")
        assert rec is not None
        master = Path(rec.run_dir) / "ssh-master.sock"
        assert master.is_socket() and master.stat().st_mode & 0o077 == 0
        assert subprocess.run(["pgrep", "-f", str(master)], capture_output=True).returncode == 0
        assert json.loads(tbctl("qmp", "clitest", "query-status").stdout)["status"] == "running"
        bad = tbctl("qmp", "clitest", "device_del", '{"id": "nosuch"}')
        assert bad.returncode == 2 and "Device 'nosuch' not found" in bad.stderr
        # a media error from the device side: the guest's next read of those blocks fails as the
        # kernel fails an Unrecovered Read Error (ENODATA); cleared, it reads again
        inj = tbctl("inject", "clitest", "media-error", "nvme0", "--lba", "0-7", "--op", "read")
        assert inj.returncode == 0 and inj.stdout.strip() == ("nvme0 namespace 1: read of LBA 0-7 (512-byte blocks) "
                                                              "fail always with Unrecovered Read Error"), inj.stderr
        read = "dd if=/dev/$(basename $(dirname $(dirname $(grep -l {} /sys/block/nvme*/device/serial)))) " \
               "of=/dev/null bs=512 count=1 skip=3 iflag=direct"
        r = tbctl("ssh", "clitest", "--", read.format("TBCTL0001"))
        assert r.returncode != 0 and "No data available" in r.stderr, r.stdout + r.stderr
        assert tbctl("inject", "clitest", "media-clear", "nvme0").stdout.strip() == "nvme0 namespace 1: media errors cleared"
        assert tbctl("ssh", "clitest", "--", read.format("TBCTL0001")).returncode == 0
        # a controller removed with a media error under its drive, and added again: a fresh drive
        assert tbctl("inject", "clitest", "media-error", "nvme1", "--lba", "3").returncode == 0
        rm = tbctl("hotplug", "clitest", "remove", "nvme1")
        assert rm.returncode == 0 and "remove nvme1: seen by the guest after" in rm.stdout, rm.stderr
        assert tbctl("hotplug", "clitest", "add", "nvme1").returncode == 0
        r = tbctl("ssh", "clitest", "--", read.format("TBCTL0002"))
        assert r.returncode == 0, r.stdout + r.stderr
        # a SMART critical warning raised from the host is in the guest's SMART log; bits add up
        assert tbctl("inject", "clitest", "smart-warning", "nvme0", "temperature").returncode == 0
        inj = tbctl("inject", "clitest", "smart-warning", "nvme0", "spare")
        assert inj.returncode == 0 and inj.stdout.strip() == "nvme0: SMART critical warning 0x02 -> 0x03", inj.stderr
        log = tbctl("ssh", "clitest", "--", "nvme smart-log -o json /dev/$(basename $(dirname $(grep -l TBCTL0001 "
                    "/sys/class/nvme/nvme*/serial)))")
        assert json.loads(log.stdout)["critical_warning"] == 3, log.stdout + log.stderr
        assert tbctl("inject", "clitest", "smart-warning", "nvme0", "none").stdout.strip().endswith("-> 0x00")
        inj = tbctl("inject", "clitest", "doorbell", "nvme0", "sq-tail-too-big")
        assert inj.returncode == 0 and "trace: pci_nvme_enqueue_event type 0x0 info 0x1" in inj.stdout, inj.stderr
        inj = tbctl("inject", "clitest", "bus-master", "nvme1", "off", "--via", "guest")
        assert inj.returncode == 0 and "-> bus master off (from the guest)" in inj.stdout, inj.stderr
        assert tbctl("inject", "clitest", "bus-master", "nvme1", "on").returncode == 0
        assert tbctl("ssh", "clitest", "--", "exit 7").returncode == 7  # one string for the shell, as ssh
        shutil.rmtree(tmp_path / "art")  # its artifacts cleaned away under it (a bench's temporary directory)
    finally:
        down = tbctl("down", "clitest")
    assert down.returncode == 0 and "clitest: guest poweroff" in down.stdout, down.stderr
    assert tbctl("status").stdout.strip() == ""
    assert subprocess.run(["pgrep", "-f", str(master)], capture_output=True).returncode == 1  # no ssh outlives it


def test_auto_accel_never_hangs(guest_image: Image) -> None:
    t0 = time.monotonic()
    ok, detail = accel.probe_kvm(guest_image, timeout=10) if accel.kvm_usable() else (False, "no /dev/kvm")
    assert time.monotonic() - t0 < 10 + 5
    assert detail
    assert accel.resolve("auto", guest_image) in ("kvm", "tcg")
    if not ok:
        assert accel.resolve("auto", guest_image) == "tcg"


def test_example_topology_fixed_controller_with_two_namespaces(guest_image: Image, accelerator: str,
                                                               tmp_path: Path) -> None:
    topo = topology.load(REPO / "examples" / "topology.toml")
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator) as m:
        fixed = guest.nvme_state(m.ssh)["TBCTL0002"]
        assert len(fixed["block"]) == 2
        sizes = m.ssh.run(" ; ".join(f"cat /sys/block/{b}/queue/logical_block_size" for b in fixed["block"]),
                          timeout=10, check=True).stdout.split()
        assert sorted(sizes) == ["4096", "512"]
        with pytest.raises(Exception, match="nvme1 is not hot-pluggable"):
            m.hot_remove("nvme1")


def test_the_spdk_ci_topology_boots_with_every_kind_of_device(guest_image: Image, accelerator: str,
                                                               tmp_path: Path) -> None:
    """The built-in spdk-ci topology: the guest has each controller, the zoned namespace as
    host-managed, and each metadata namespace with its format's metadata size and protection type."""
    topo = topology.load(topology.ref("spdk-ci"))
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator) as m:
        state = guest.nvme_state(m.ssh)
        assert sorted(state) == sorted(c.serial for c in topo.controllers), state
        (zns,) = state["12343"]["block"]
        assert m.ssh.run(f"cat /sys/block/{zns}/queue/zoned", timeout=10, check=True).stdout.strip() == "host-managed"
        formats = []
        for dev in sorted(state["12344"]["block"]):
            ns = json.loads(m.ssh.run(f"nvme id-ns -o json /dev/{dev}", timeout=30, check=True).stdout)
            formats.append((ns["lbafs"][ns["flbas"] & 0xF]["ms"], ns["dps"] & 7))
        assert formats == [(8, 1), (8, 2), (8, 3), (64, 0)], formats


def test_viommu_qtest_and_hugepages_boot(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    topo = topology.parse({"machine": {"iommu": True, "qtest": True, "hugepages": 16},
                           "nvme": [{"id": "nvme0", "serial": "IOMMU0"}]}, "viommu")
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator) as m:
        assert (m.run_dir / "qtest.sock").exists()
        addr = guest.nvme_state(m.ssh)["IOMMU0"]["address"]
        group = m.ssh.run(f"readlink /sys/bus/pci/devices/{addr}/iommu_group", timeout=10, check=True).stdout
        assert "/iommu_groups/" in group
        assert "HugePages_Total:      16" in m.ssh.run("cat /proc/meminfo", timeout=10, check=True).stdout
        assert m.hot_remove("nvme0")["guest"] < 10 and m.hot_add("nvme0")["guest"] < 10


def test_driver_binding_uio_vfio_and_back_to_nvme(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    topo = topology.parse({"machine": {"iommu": True}, "nvme": [{"id": "nvme0", "serial": "BIND0"}]}, "bind")
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator) as m:
        bdf = faults.Hotplug(m).address("nvme0")
        driver = f"basename $(readlink /sys/bus/pci/devices/{bdf}/driver)"
        guest.bind(m.ssh, [bdf], "vfio-pci")
        group = m.ssh.run(f"basename $(readlink /sys/bus/pci/devices/{bdf}/iommu_group)", timeout=10).stdout.strip()
        assert m.ssh.run(f"{driver}; test -c /dev/vfio/{group}", timeout=10, check=True).stdout.strip() == "vfio-pci"
        assert guest.identities(m.ssh)[bdf] == {"serial": "BIND0", "model": "QEMU NVMe Ctrl"}
        guest.bind(m.ssh, [bdf], "uio_pci_generic")
        assert m.ssh.run(f"{driver}; ls /dev/uio0", timeout=10, check=True).stdout.split()[0] == "uio_pci_generic"
        assert "BIND0" not in guest.nvme_state(m.ssh)
        guest.bind(m.ssh, [bdf], "nvme")
        guest.NvmeWatch(m.ssh, ["BIND0"], True, 30, expect_change=False).result()
        with pytest.raises(Exception, match="must be one of nvme, uio_pci_generic, vfio-pci"):
            guest.bind(m.ssh, [bdf], "ahci")


def test_snapshot_restore_and_cold_fallback(guest_image: Image, accelerator: str, tmp_path: Path) -> None:
    """A machine restored from a saved guest is ready with its controllers hot-added, takes
    hotplug and I/O, and leaves nothing behind; a topology with a fixed controller cannot be
    saved and says why."""
    from orchestrator.machines import snapshot

    topo = topology.default()
    saved = snapshot.ensure(topo, guest_image, accelerator)
    assert saved.state.stat().st_size > 0 and saved.disk.exists()
    assert snapshot.ensure(topo, guest_image, accelerator) == saved  # made once, then reused
    with Machine(topo, guest_image, tmp_path / "art", accel=accelerator, restore=saved) as m:
        seen = guest.nvme_state(m.ssh)
        assert set(seen) == {"TBCTL0001", "TBCTL0002"} and all(c["state"] == "live" for c in seen.values())
        m.hot_remove("nvme1")
        m.hot_add("nvme1")
        dev = "/dev/" + guest.nvme_state(m.ssh)["TBCTL0002"]["block"][0]
        m.ssh.run(f"dd if=/dev/urandom of={dev} bs=4k count=16 oflag=direct", timeout=30, check=True)
        argv = (tmp_path / "art" / "qemu.argv").read_text()
        assert "-incoming defer" in argv and '"driver": "nvme"' not in argv  # root ports empty at start
    assert "ready (restored from" in (tmp_path / "art" / "machine.log").read_text()
    fixed = topology.load(REPO / "examples" / "topology.toml")
    assert "not hot-pluggable" in (snapshot.unsupported(fixed, accelerator) or "")
