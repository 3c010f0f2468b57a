"""One QEMU process: render argv, launch, console, boot marker, its own crash, escalating shutdown.

Modelled on qemu.machine's QEMUMachine: this object owns the process, its sockets (in a private
0700 run directory) and its throw-away disks; the artifacts (argv, console, QMP events, stderr)
go to a separate directory that outlives it. Every wait has a deadline, and when one fires the
QEMU is killed and the error says what hung. It knows the guest only by what QEMU shows (the
console, QMP): a subclass (orchestrator.machines) adds the guest's side through `ready_steps`,
`poweroff_guest` and `close_guest`.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Self

from orchestrator import logs
from orchestrator.config.topology import Controller, Nic, Topology
from orchestrator.errors import ConfigError, DeadlineError, MachineError, QemuCrashed, QemuLaunchFailure, TbctlError
from orchestrator.image import MARKER_FAILED, MARKER_READY, Image
from orchestrator.net.links import Link
from orchestrator.net.ports import free_port
from orchestrator.render import render
from orchestrator.report import acpi_hotplug, crash
from orchestrator.vm import cpu, devices, qemu_binary, qemu_core, registry
from orchestrator.vm.console import Console
from orchestrator.vm.qmp import QMP
from orchestrator.vm.registry import Record

BIOS = "qboot.rom"  # found in the chosen QEMU's own data directories (without it: its default, SeaBIOS)
# QEMU's ACPI PCI hotplug trace, always on where the binary has it: only hotplug writes it, and it
# tells a removal the guest never completed from one QEMU never finished (acpi_hotplug).
ACPI_TRACE = "acpi_pci_"
DEFAULT_BOOT_TIMEOUT = 60.0
SETTLE = 30.0  # seconds a QEMU whose channels closed may take to be gone (it may be writing its core)
# Under TCG a controller was once seen stuck "connecting" at boot (an admin completion whose
# interrupt never came). The nvme driver polls the queue when an admin command times out; 20 s
# instead of 60 s lets that recovery happen well inside the boot deadline.
TCG_KERNEL_ARGS = "nvme_core.admin_timeout=20"
# Every sysrq key works from the keyboard, so a hung guest's stacks can be asked for from the host
# (QMP send-key) when its SSH is stuck too; Debian's default (kernel.sysrq=438) refuses w, l and t.
KERNEL_ARGS = "sysrq_always_enabled"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")
_PORT_IN_USE = "Could not set up host forwarding rule"
_READY = re.compile(re.escape(MARKER_READY) + r" ([0-9.]+)")
_BOOT_FAILED = re.compile(re.escape(MARKER_FAILED) + r".*|Kernel panic - not syncing.*")
# A kernel that panicked or stalled before its sshd marker gets one more boot: seen under TCG,
# "Oops: int3" in sched_clock_cpu while a static key was patched (1 in 27 trixie boots under
# load), and an RCU stall with a vCPU taking no timer interrupts (QEMU 10.0, once in a CI run).
# The failed boot's console is kept and machine.log says so.
BOOTS = 2
# A boot that printed nothing by its deadline (seen once in CI: a fabric test's target guest, its
# console empty for 60 s) is booted again with the kernel's early console, so the next failure
# shows how far it got: every message, from the first instructions of the kernel on.
EARLY_CONSOLE = "earlyprintk=serial,ttyS0,115200 ignore_loglevel"
# A boot that printed something and then nothing more by its deadline (seen once in a local CI:
# the initrd's line, then 60 s of silence), or whose sshd said it listens and then never finished
# a key exchange (seen once in CI, stop 36: 57 s of "No existing session" on a fresh guest), is
# asked what it is doing before it is killed: SysRq w (blocked tasks) and l (each CPU's backtrace)
# through the PS/2 keyboard, printed on the console whatever its log level, and each vCPU's state
# as QEMU holds it is kept (cpus-bootN.txt); then it gets one more boot, and the dump stays in
# console-bootN.log.
SYSRQ = ("w", "l")
SYSRQ_WAIT = 3.0  # seconds for the dump to reach the console
_BLOCKED = re.compile(r"task:(\S+)\s+state:D")
_STALL = re.compile(r"rcu: INFO: \w+ detected stalls on CPUs/tasks|watchdog: BUG: soft lockup[^\n]*")


def kernel_cmdline(image: Image, topo: Topology, accel: str) -> str:
    """The guest kernel's command line: the image's, tbctl's, the topology's, the accelerator's."""
    return " ".join(filter(None, [image.cmdline, KERNEL_ARGS, topo.kernel_args(),
                                  TCG_KERNEL_ARGS if accel == "tcg" else ""]))


class KernelBrokeAtBoot(MachineError):
    """The guest kernel panicked or stalled before it was ready."""


class SilentBoot(KernelBrokeAtBoot):
    """The guest printed nothing at all before its boot deadline."""


class StuckBoot(KernelBrokeAtBoot):
    """The guest printed something, or its sshd was up, then it went silent to its boot deadline."""


@dataclass(frozen=True)
class Saved:
    """A saved guest (orchestrator.machines.snapshot makes them): QEMU's migration stream and the
    root disk of that moment."""

    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "state.bin"

    @property
    def disk(self) -> Path:
        return self.dir / "root.qcow2"


def new_name() -> str:
    return f"vm-{secrets.token_hex(3)}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"machine name {name!r}: must be 1-31 of a-z 0-9 _ -, starting with a letter or digit")
    return name


class QemuMachine:
    """A guest under QEMU. `with QemuMachine(...) as m:` launches it and always shuts it down."""

    # What each step of getting ready is called in machine.log (the timings' keys).
    STEPS = {"marker": "sshd marker"}

    def __init__(self, topology: Topology, image: Image, artifacts: Path, *, name: str | None = None,
                 accel: str = "tcg", persistent: bool = False, boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
                 shares: dict[str, Path] | None = None, empty_ports: bool = False,
                 restore: Saved | None = None, qemu: qemu_binary.Qemu | None = None,
                 links: dict[str, Link] | None = None, bed: tuple[str, str] | None = None,
                 keepable: bool = False):
        name = check_name(name or new_name())
        self.keepable = keepable  # may be kept after its owner exits (`keep`): no pdeathsig
        self.name, self.topology, self.image, self.accel = name, topology, image, accel
        self.persistent, self.boot_timeout = persistent, boot_timeout
        self.shares = shares or {}  # virtfs mount tag -> host directory, exported read-only
        self.links = links or {}  # NIC id -> the UDP ports of its network's ends (net.links)
        self.bed = bed  # (config.bed.ref of its bed, its role) for a bed's machine
        self.artifacts = artifacts
        self.run_dir = registry.vms_dir() / name
        self.record: Record | None = None
        self.console: Console | None = None
        self._qmp: QMP | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._crash: list[crash.Finding] | None = None
        self._crash_lock = threading.Lock()  # QEMU's death is read once, whichever thread noticed it
        self.timings: dict[str, float] = {}
        self.stopped = False  # tbctl shut it down (QEMU gone otherwise means QEMU died)
        # Snapshot fast restore (orchestrator.machines.snapshot): the hot-pluggable controllers' root
        # ports start empty (NVMe cannot be migrated); a restored machine loads a saved guest
        # and hot-adds its controllers.
        self.restore = restore
        self.qemu = qemu or qemu_binary.current()
        self.empty_ports = empty_ports or restore is not None
        self.stage = ""  # the step of getting ready under way, for the error if it fails
        self.early_console = False  # the kernel's early console on (a boot after a silent one)
        self.boot, self.last_boot = 1, True  # no boot after this one: a boot that broke raises its own error

    # -- building the command line -------------------------------------------------------------

    def boot_controllers(self) -> list[Controller]:
        """The controllers on the command line: all, but for the hot-pluggable ones of a machine
        started with empty root ports."""
        return [c for c in self.topology.controllers if not (self.empty_ports and c.hotplug)]

    def boot_nics(self) -> list[Nic]:
        """The bed's NICs on the command line, as the controllers: a saved guest has none (a
        restored one gets its NICs hot-added, with its own MAC and its network's ends of now)."""
        return [n for n in self.topology.nics if not (self.empty_ports and n.hotplug)]

    def backing(self, ctrl: Controller, nsid: int) -> Path:
        return devices.backing(self.run_dir / "nvme", ctrl, nsid)

    def argv(self, ssh_port: int) -> list[str]:
        topo = self.topology
        attached = self.boot_controllers()
        networked = topo.nics if self.restore is not None else self.boot_nics()  # a save's template has none
        unlinked = [n.id for n in networked if n.id not in self.links]
        if unlinked:
            raise MachineError(f"{self.name}: NIC(s) {', '.join(unlinked)} have no network peer: boot the machine "
                               "as part of its bed")
        cmdline = kernel_cmdline(self.image, topo, self.accel) + (f" {EARLY_CONSOLE}" if self.early_console else "")
        text = render("qemu/argv.j2", qemu=self.qemu.argv(), name=self.name,
                      accel=self.qemu.accel_option(self.accel),
                      bios=self.qemu.firmware(BIOS),
                      cpu=cpu.model(self.accel),
                      image=self.image, cmdline=cmdline, overlay=self.run_dir / "root.qcow2", ssh_port=ssh_port,
                      run_dir=self.run_dir, console_log=self.artifacts / "console.log",
                      incoming=self.restore is not None, traces=self._traces(), links=self.links, nics=self.boot_nics(),
                      **devices.context(topo, self.run_dir / "nvme", attached, self.shares))
        return [line for line in text.splitlines() if line]

    def _traces(self) -> list[str]:
        return [ACPI_TRACE + "*"] if any(t.startswith(ACPI_TRACE) for t in self.qemu.trace_events) else []

    # -- launch and readiness -----------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.launch()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def launch(self) -> Self:
        """Start QEMU, then wait until the guest is ready."""
        self.start()
        return self.finish()

    def start(self) -> None:
        """Register the VM, make its disks and start its QEMU, without waiting for the guest (so
        several machines boot at once). Call it from the thread that stays: a QEMU tbctl owns dies
        with the thread that started it (pdeathsig)."""
        registry.reap()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        with registry.locked():
            if self.run_dir.exists():
                raise ConfigError(f"a VM named {self.name!r} already exists (tbctl status; tbctl down {self.name})")
            self.run_dir.mkdir(mode=0o700)
            me = os.getpid()
            self.record = Record(name=self.name, run_dir=str(self.run_dir), artifacts=str(self.artifacts),
                                 image=str(self.image.dir), accel=self.accel,
                                 topology=self._topology_ref(),
                                 ssh_port=0, owner_pid=None if self.persistent else me,
                                 owner_start=None if self.persistent else registry.start_time(me), created=time.time(),
                                 qemu=str(self.qemu.path), bed=self.bed[0] if self.bed else None,
                                 role=self.bed[1] if self.bed else None,
                                 links={n: [e.local, e.remote] for n, e in self.links.items()} or None)
            registry.save(self.record)
        self.boot = 0  # wait_boot counts them
        try:
            self._spawn()
        except BaseException:
            self.shutdown(graceful=False)
            raise

    def _spawn(self) -> None:
        self._prepare_disks()
        self._start_qemu()
        if self.restore is not None:  # loaded while start returns: a bed's machines load side by side
            self.qmp.execute("migrate-incoming", {"uri": "exec:cat " + shlex.quote(str(self.restore.state))})

    def finish(self) -> Self:
        """Wait until the started guest is ready; a kernel that panicked or stalled at boot gets one
        more boot. Whatever fails, the VM is shut down."""
        try:
            while (broke := self.wait_boot()) is not None:
                self.boot_again(broke)
        except BaseException:
            self.shutdown(graceful=False)
            raise
        return self

    def wait_boot(self) -> KernelBrokeAtBoot | None:
        """The next boot's wait until the guest is ready: None once it is; the error when its
        kernel broke and it gets one more boot (raised on the last). Starts no QEMU: machines may
        wait side by side (machines.bed), each in a thread."""
        self.boot += 1
        self.last_boot = self.boot == BOOTS
        try:
            self.wait_ready(self.boot_timeout)
            return None
        except KernelBrokeAtBoot as e:
            if self.last_boot:
                raise
            return e

    def boot_again(self, broke: KernelBrokeAtBoot) -> None:
        """One more boot after `broke`; it starts QEMU, so from the thread the QEMU must not outlive."""
        self._discard_boot(self.boot, str(broke).splitlines()[0])
        self.early_console = isinstance(broke, SilentBoot)
        self._spawn()

    def _discard_boot(self, boot: int, why: str) -> None:
        """Throw a boot whose kernel panicked or stalled away (QEMU, its disks; its console log is kept) so
        the next one starts from the image again."""
        kept = self.artifacts / f"console-boot{boot}.log"
        self.log(f"boot {boot} failed ({why}); booting again, that boot's console is in {kept.name}")
        self._stop(graceful=False)
        self.close_channels()
        self.wait_exit(5)
        (self.artifacts / "console.log").replace(kept)
        (self.run_dir / "root.qcow2").unlink()
        shutil.rmtree(self.run_dir / "nvme")

    def _topology_ref(self) -> str:
        """How `attach` finds the topology again: an absolute path, so any working directory works."""
        src = Path(self.topology.source)
        return str(src.resolve()) if src.is_file() else self.topology.source

    def _prepare_disks(self) -> None:
        base = self.restore.disk if self.restore is not None else self.image.disk
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                        str(self.run_dir / "root.qcow2")], check=True, timeout=30, capture_output=True)
        (self.run_dir / "nvme").mkdir()
        devices.create_backing(self.topology, self.run_dir / "nvme")

    def _start_qemu(self, attempts: int = 5) -> None:
        assert self.record is not None
        for attempt in range(1, attempts + 1):
            port = free_port()
            argv = self.argv(port)
            (self.artifacts / "qemu.argv").write_text(shlex.join(argv) + "\n")
            # Owned VMs die with tbctl (pdeathsig); `up` VMs live on in their own session until `down`.
            # A keepable one is reaped by the next tbctl if its owner dies before keeping it.
            wrapper = [] if self.persistent or self.keepable else ["setpriv", "--pdeathsig", "KILL", "--"]
            stderr = open(self.stderr_log, "ab")
            self.timings["launched"] = time.monotonic()
            # In its run directory with cores allowed: a QEMU that crashes leaves its core there (qemu_core).
            self._proc = subprocess.Popen(wrapper + argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                          start_new_session=True, close_fds=True, cwd=self.run_dir,
                                          env=self.qemu.environ(), preexec_fn=qemu_core.allow_cores)
            stderr.close()
            self.record.pid, self.record.ssh_port = self._proc.pid, port
            self.record.pid_start = registry.start_time(self._proc.pid)
            registry.save(self.record)
            try:
                self.console = Console(self.run_dir / "console.sock", self.name, self.lost)
                self.console.connect(10, self.qemu_alive)
                self._qmp = QMP(self.run_dir / "qmp.sock", self.artifacts / "qmp-events.jsonl", self.name,
                                self.unplug_stopped, self.lost)
                self._qmp.connect(10, self.qemu_alive)
                return
            except MachineError:
                self.close_channels()
                self.wait_exit(5)
                err = self.stderr_log.read_text(errors="replace")
                if _PORT_IN_USE in err and attempt < attempts:
                    continue  # another process took the port between our check and QEMU's bind
                raise QemuLaunchFailure(f"{self.name}: QEMU failed to start (exit {self._proc.returncode}): "
                                        f"{err.strip()[-1500:]}", exitcode=self._proc.returncode, command=argv,
                                        output=err) from None

    @property
    def qtest_socket(self) -> Path | None:
        """Host-side register access (`qtest = true` in the topology), else None."""
        return self.record.qtest_socket if self.record is not None and self.topology.qtest else None

    @property
    def stderr_log(self) -> Path:
        """QEMU's stderr: its own messages and the trace events switched on."""
        return self.artifacts / "qemu.stderr"

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it exited (negative: the signal), if tbctl started it."""
        return self._proc.poll() if self._proc is not None else None

    def qemu_crash(self) -> list[crash.Finding]:
        """Why QEMU died while nobody stopped it: its assertion, or its signal titled by the first
        frame of its own code in its core's crashing thread (gdb's backtraces go to
        qemu-core.bt.txt beside its other logs; the core itself is removed)."""
        with self._crash_lock:
            if self._crash is None:
                self._crash = self._read_crash()
                self.log(f"QEMU died (exit {self.returncode}): {self._crash[0].title}")
            return self._crash

    def _read_crash(self) -> list[crash.Finding]:
        bt, frames = "", []
        core = qemu_core.find(self.run_dir, self.record.pid if self.record else None)
        if core is not None:
            bt = qemu_core.backtrace(self.qemu.path, core)
            frames = qemu_core.crashing_frames(bt, self.qemu.path)
            (self.artifacts / "qemu-core.bt.txt").write_text(bt)
            core.unlink()
        stderr = self.stderr_log.read_text(errors="replace")
        return crash.qemu_findings(stderr, self.returncode, bt, frames, list(self._qmp.sent) if self._qmp else [])

    def unplug_stopped(self, device: str) -> str:
        """Where the last device_del (of `device`) stopped, from QEMU's ACPI hotplug trace in its
        stderr; when QEMU unrealized the device, whether it is still in QEMU's device tree."""
        if not self._traces():
            return f"QEMU {self.qemu.version_text} has no {ACPI_TRACE}* trace events to tell where it stopped"
        verdict = acpi_hotplug.last_unplug(self.stderr_log.read_text(errors="replace"))
        if not verdict.unrealized:
            return verdict.describe()
        try:
            held = {p["name"] for p in self.qmp.execute("qom-list", {"path": "/machine/peripheral"})}
        except TbctlError as e:
            return f"{verdict.describe()}; QEMU's device tree not read ({e})"
        where = (f"it is still in QEMU's device tree (/machine/peripheral/{device})" if device in held else
                 "QEMU took it out of its device tree (/machine/peripheral) but never freed it: a reference to it "
                 "leaked")
        return f"{verdict.describe()}; {where}"

    def threads_backtrace(self) -> Path | None:
        """Every thread of this (live) QEMU, from gdb attached for a moment: qemu-threads.bt.txt."""
        if self.record is None or self.record.pid is None or not self.qemu_alive():
            return None
        out = self.artifacts / "qemu-threads.bt.txt"
        out.write_text(qemu_core.live_backtrace(self.record.pid))
        return out

    @property
    def crashed(self) -> bool:
        """QEMU died on its own (qemu_crash() told why)."""
        return self._crash is not None and bool(self._crash) and self._crash[0].title.startswith("QEMU")

    def settle(self, timeout: float = SETTLE) -> None:
        """If QEMU is on its way out on its own (its console or QMP closed while nobody stopped it:
        it may still be writing its core), wait for it to be gone, so its death is seen as such."""
        closed = (self.console is not None and self.console.closed) or \
            (self._qmp is not None and self._qmp.closed)
        if not self.stopped and closed:
            self.wait_exit(timeout)

    def lost(self, what: str) -> MachineError:
        """The error for a call (QMP, console, qtest) whose channel QEMU's end cut short: once QEMU
        is gone, QemuCrashed with the title of its death if it died on its own, whatever call
        noticed first; a plain MachineError when tbctl stopped it, or it still runs."""
        if not self.stopped:
            self.wait_exit(SETTLE)
        if self.stopped or self.qemu_alive():  # (stopped may have been set meanwhile, by another thread)
            state = "QEMU was shut down" if self.stopped else f"QEMU still runs {SETTLE:g} s later"
            return MachineError(f"{self.name}: {what}: the connection to QEMU closed ({state})")
        if self._proc is None:  # attached to a VM another tbctl started: its exit status is not ours to read
            return MachineError(f"{self.name}: {what}: QEMU exited")
        death = self.qemu_crash()[0]
        return QemuCrashed(f"{self.name}: {what}: QEMU died: {death.title}", title=death.title,
                           returncode=self.returncode)

    def qemu_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.record is not None and self.record.qemu_alive()

    def _loaded(self, saved: Saved, deadline: float) -> None:
        """Until the saved guest (its load begun by _spawn) runs on from where it was saved."""
        while (status := self.qmp.execute("query-status")["status"]) != "running":
            if status not in ("inmigrate", "paused", "prelaunch") or time.monotonic() > deadline:
                raise MachineError(f"{self.name}: loading {saved.state} failed or hung (status {status}); "
                                   f"qemu.stderr: {self.stderr_log.read_text()[-500:]}")
            time.sleep(0.05)
        self.timings["marker"] = time.monotonic()  # the saved guest was past its marker

    def wait_ready(self, timeout: float) -> None:
        """Every step of `ready_steps` within `timeout`; one that fails names itself, with the
        console's tail. machine.log gets each step's time after launch."""
        assert self.console is not None and self.record is not None
        deadline = time.monotonic() + timeout
        try:
            self.ready_steps(deadline)
        except TbctlError as e:  # the same error, its fields kept, saying which step and what the console shows
            e.machine, e.stage = e.machine or self.name, e.stage or self.stage
            e.args = (f"{self.name}: guest not ready ({self.stage}) within {timeout:g} s: {e}\n"
                      f"--- console tail ({self.artifacts / 'console.log'}) ---\n{self.console.tail()}",)
            raise e from None
        t = {k: round(v - self.timings["launched"], 2) for k, v in self.timings.items() if k in self.STEPS}
        how = f"restored from {self.restore.dir}" if self.restore is not None else "booted"
        self.log(f"ready ({how}): " + ", ".join(f"{label} {t[k]} s" for k, label in self.STEPS.items() if k in t)
                 + f" after launch (accel {self.accel})")

    def ready_steps(self, deadline: float) -> None:
        """The guest's own word that it booted: its marker on the console (a restored guest was
        past it when saved). A kernel that panicked or stalled first is KernelBrokeAtBoot."""
        assert self.console is not None
        if self.restore is not None:
            self.stage = "the saved guest loaded"
            self._loaded(self.restore, deadline)
            return
        self.stage = "console marker"
        try:
            m = self.console.wait_for([_READY, _BOOT_FAILED], max(0.0, deadline - time.monotonic()))
        except DeadlineError as e:
            text = self.console.text
            stall = _STALL.search(text)
            if stall:
                raise KernelBrokeAtBoot(f"{self.name}: guest boot stalled: {stall.group(0)}") from None
            if not text.strip() and not self.early_console:
                raise SilentBoot(f"{self.name}: the guest printed nothing on its console") from None
            last = text.strip().splitlines()[-1][-300:] if text.strip() else None
            if last is None:
                early = " (kernel early console on)" if self.early_console else ""
                e.args = (f"{e}; no output from the firmware{early}",)
                raise
            self.hung_at_boot(e, f"boot stuck after its last line {last!r}",
                              f"the last thing it printed: {last!r}", len(text))
        if m.group(0).startswith("Kernel panic"):
            raise KernelBrokeAtBoot(f"{self.name}: guest boot failed: {m.group(0)}")
        if not m.group(0).startswith(MARKER_READY):
            raise MachineError(f"{self.name}: guest boot failed: {m.group(0)}")
        self.timings["marker"] = time.monotonic()

    def hung_at_boot(self, e: TbctlError, what: str, detail: str, since: int) -> NoReturn:
        """A boot step that printed, or answered, and then went silent to its deadline: the guest
        is asked what it does (SysRq) and, unless this is its last boot, gets one more
        (StuckBoot); the last boot's error keeps its fields and says the same. `since`: where
        on the console the dump starts."""
        said = self._sysrq_dump(since)
        if not self.last_boot:
            raise StuckBoot(f"{self.name}: guest {what}{said}") from None
        e.args = (f"{e}; {detail}{said}",)
        raise e

    def _sysrq_dump(self, since: int) -> str:
        """SysRq's blocked tasks and CPU backtraces on the console of a guest stuck at boot: what
        its blocked tasks are ("; blocked: modprobe, sh"), or that the kernel did not answer."""
        try:
            for key in SYSRQ:
                self.qmp.execute("send-key", {"keys": [{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)]},
                                 timeout=5)
        except TbctlError:
            return ""  # QEMU itself does not answer: its own error says so
        time.sleep(SYSRQ_WAIT)
        self.save_cpu_states(self.artifacts / f"cpus-boot{self.boot}.txt")
        dump = self.console.text[since:] if self.console else ""
        if "sysrq:" not in dump:
            return "; the kernel did not answer SysRq"
        blocked = list(dict.fromkeys(_BLOCKED.findall(dump)))
        return f"; blocked: {', '.join(blocked)}" if blocked else "; no task blocked (SysRq's dump is on the console)"

    def save_cpu_states(self, path: Path) -> None:
        """Each vCPU's registers and local APIC (QMP.cpu_states) into `path`, or why they could not be had."""
        try:
            text = self.qmp.cpu_states(self.topology.cpus, timeout=10)
        except TbctlError as e:
            text = f"QEMU gave no vCPU state: {e}\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    # -- channels -------------------------------------------------------------------------------

    @classmethod
    def attach(cls, rec: Record) -> Self:
        """A handle on a VM another tbctl process launched (`tbctl up`), for ssh/qmp/hotplug/down."""
        from orchestrator.config import bed
        from orchestrator.config.topology import default, load

        if rec.bed is not None and rec.role is not None:
            topo = bed.by_ref(rec.bed).machine(rec.role)
        else:
            topo = default() if rec.topology == "<built-in default>" else load(rec.topology)
        m = cls(topo, Image(Path(rec.image)), Path(rec.artifacts), name=rec.name, accel=rec.accel,
                persistent=rec.owner_pid is None, qemu=qemu_binary.probe(Path(rec.qemu)) if rec.qemu else None,
                links={n: Link(*ends) for n, ends in (rec.links or {}).items()},
                bed=(rec.bed, rec.role) if rec.bed is not None and rec.role is not None else None)
        m.record = rec
        # Its logs go on where it was started; a directory someone cleaned away meanwhile (a
        # bench's temporary one) is made again rather than failing `down` half-way.
        m.artifacts.mkdir(parents=True, exist_ok=True)
        return m

    @property
    def qmp(self) -> QMP:
        if self._qmp is None:
            assert self.record is not None
            self._qmp = QMP(self.record.qmp_socket, self.artifacts / "qmp-events.jsonl", self.name,
                            self.unplug_stopped, self.lost)
            self._qmp.connect(10, self.qemu_alive)
        return self._qmp

    @property
    def qmp_channel(self) -> QMP | None:
        """The QMP connection if one was made, never connecting: its recorded events stay readable
        after QEMU is gone."""
        return self._qmp

    def log(self, msg: str) -> None:
        """A line in machine.log (and the run's log, where the engine keeps one)."""
        logs.machine(self.name, self.artifacts / "machine.log").info(msg)

    # -- shutdown ---------------------------------------------------------------------------------

    def wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.qemu_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def keep(self) -> None:
        """Hand an owned VM over to the user: it outlives this tbctl, registered as `tbctl up`'s are."""
        assert self.keepable and self.record is not None
        self.record.owner_pid = self.record.owner_start = None
        registry.save(self.record)
        self.persistent = True
        self.log("kept: left running for the user (tbctl ssh / tbctl down)")

    def release(self) -> None:
        """Let go of a VM without stopping it (after `tbctl up`, or a command on a VM it started)."""
        self.close_channels()
        logs.close_machine(self.name)

    def close_channels(self) -> None:
        """Close the guest's channels, QMP and the console. The closed QMP and console objects are
        kept: their events and text are still read for a test's artifacts after the VM is gone."""
        self.close_guest()
        for ch in (self._qmp, self.console):
            if ch is not None:
                ch.close()

    def close_guest(self) -> None:
        """Close whatever a subclass opened into the guest."""

    def poweroff_guest(self) -> bool:
        """Ask the guest to power off and wait for QEMU to exit: True if it did. QEMU alone cannot
        (no ACPI power-button daemon in the guest): a subclass that reaches the guest can."""
        return False

    def shutdown(self, graceful: bool = True) -> str:
        """Guest poweroff -> QMP quit -> SIGTERM -> SIGKILL, each with a deadline; then remove the
        run directory and the registry record. Returns the step that ended QEMU."""
        how = "already exited"
        self.stopped = True
        if self.qemu_alive():
            how = self._stop(graceful)
        self.close_channels()
        if self._proc is not None and not self.wait_exit(5):
            how += " (QEMU did not exit after SIGKILL)"
        if self.record is not None:
            registry.remove(self.record)
        self.log(f"shut down: {how}")
        logs.close_machine(self.name)
        return how

    def _stop(self, graceful: bool) -> str:
        if graceful and self.poweroff_guest():
            return "guest poweroff"
        try:
            self.qmp.execute("quit", timeout=3)
        except TbctlError:
            pass
        if self.wait_exit(5):
            return "QMP quit"
        assert self.record is not None and self.record.pid is not None
        registry.kill(self.record.pid, self.record.pid_start)
        self.wait_exit(5)
        return "signal (QEMU ignored poweroff and quit)"

    def status(self) -> dict[str, Any]:
        assert self.record is not None
        return {"name": self.name, "alive": self.qemu_alive(), "pid": self.record.pid, "accel": self.accel,
                "ssh": f"root@127.0.0.1:{self.record.ssh_port}", "qmp": str(self.record.qmp_socket),
                "artifacts": str(self.artifacts), "owner": self.record.owner_pid or "none (tbctl up)"}

