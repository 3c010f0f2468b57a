"""One QEMU process: render argv, launch, console, readiness, hotplug, escalating shutdown.

Modelled on qemu.machine: this object owns the process, its sockets (in a private 0700 run
directory) and its throw-away disks; the artifacts (argv, console, QMP events, stderr, guest
commands) go to a separate directory that outlives it. Every wait has a deadline, and when one
fires the QEMU is killed and the error says what hung.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.report import acpi_hotplug, crash
from orchestrator.vm import cpu, qemu_binary, qemu_core, registry
from orchestrator import guest
from orchestrator.vm.console import Console
from orchestrator.errors import ConfigError, DeadlineError, MachineError, TbctlError
from orchestrator.image import MARKER_FAILED, MARKER_READY, Image
from orchestrator.net.ports import free_port
from orchestrator.vm.qmp import QMP, blockdev, pci_address, port_address
from orchestrator.vm.registry import Record
from orchestrator.render import render
from orchestrator.guest.ssh import SSH, Result
from orchestrator.config.topology import Controller, Topology

if TYPE_CHECKING:
    from orchestrator.vm.snapshot import Saved

BIOS = "qboot.rom"  # found in the chosen QEMU's own data directories (without it: its default, SeaBIOS)
# QEMU's ACPI PCI hotplug trace, always on where the binary has it: only hotplug writes it, and it
# tells a removal the guest never completed from one QEMU never finished (acpi_hotplug).
ACPI_TRACE = "acpi_pci_"
DEFAULT_BOOT_TIMEOUT = 60.0
# Under TCG a controller was once seen stuck "connecting" at boot (an admin completion whose
# interrupt never came). The nvme driver polls the queue when an admin command times out; 20 s
# instead of 60 s lets that recovery happen well inside the boot deadline.
TCG_KERNEL_ARGS = "nvme_core.admin_timeout=20"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")
_PORT_IN_USE = "Could not set up host forwarding rule"
_READY = re.compile(re.escape(MARKER_READY) + r" ([0-9.]+)")
_BOOT_FAILED = re.compile(re.escape(MARKER_FAILED) + r".*|Kernel panic - not syncing.*")
# A kernel that panicked or stalled before its sshd marker gets one more boot: seen under TCG,
# "Oops: int3" in sched_clock_cpu while a static key was patched (1 in 27 trixie boots under
# load), and an RCU stall with a vCPU taking no timer interrupts (QEMU 10.0, once in a CI run).
# The failed boot's console is kept and machine.log says so.
BOOTS = 2
_STALL = re.compile(r"rcu: INFO: \w+ detected stalls on CPUs/tasks|watchdog: BUG: soft lockup[^\n]*")


class KernelBrokeAtBoot(MachineError):
    """The guest kernel panicked or stalled before it was ready."""


def new_name() -> str:
    return f"vm-{secrets.token_hex(3)}"


class Machine:
    """A guest under QEMU. `with Machine(...) as m:` launches it and always shuts it down."""

    def __init__(self, topology: Topology, image: Image, artifacts: Path, *, name: str | None = None,
                 accel: str = "tcg", persistent: bool = False, boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
                 shares: dict[str, Path] | None = None, empty_ports: bool = False,
                 restore: "Saved | None" = None, qemu: qemu_binary.Qemu | None = None):
        name = name or new_name()
        if not _NAME.match(name):
            raise ConfigError(f"machine name {name!r}: must be 1-31 of a-z 0-9 _ -, starting with a letter or digit")
        self.name, self.topology, self.image, self.accel = name, topology, image, accel
        self.persistent, self.boot_timeout = persistent, boot_timeout
        self.shares = shares or {}  # virtfs mount tag -> host directory, exported read-only
        self.artifacts = artifacts
        self.run_dir = registry.vms_dir() / name
        self.record: Record | None = None
        self.console: Console | None = None
        self._qmp: QMP | None = None
        self._ssh: SSH | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._crash: list[crash.Finding] | None = None
        self.timings: dict[str, float] = {}
        self.stopped = False  # tbctl shut it down (QEMU gone otherwise means QEMU died)
        # Snapshot fast restore (orchestrator/snapshot.py): the hot-pluggable controllers' root
        # ports start empty (NVMe cannot be migrated); a restored machine loads a saved guest
        # and hot-adds its controllers.
        self.restore = restore
        self.qemu = qemu or qemu_binary.current()
        self.empty_ports = empty_ports or restore is not None

    # -- building the command line -------------------------------------------------------------

    def boot_controllers(self) -> list[Controller]:
        """The controllers on the command line: all, but for the hot-pluggable ones of a machine
        started with empty root ports."""
        return [c for c in self.topology.controllers if not (self.empty_ports and c.hotplug)]

    def backing(self, ctrl: Controller, nsid: int) -> Path:
        return self.run_dir / "nvme" / f"{ctrl.node(nsid)}.raw"

    def argv(self, ssh_port: int) -> list[str]:
        topo = self.topology
        attached = self.boot_controllers()
        blockdevs = [blockdev(c.node(i), self.backing(c, i)) for c in attached for i in range(1, len(c.namespaces) + 1)]
        objects = [{"qom-type": "memory-backend-file", "id": f"{c.id}-pmr", "share": True,
                    "mem-path": str(self.run_dir / "nvme" / f"{c.id}.pmr"), "size": c.pmr_size_mib << 20}
                   for c in topo.controllers if c.pmr_size_mib]
        root_ports = {c.id: {"driver": "pcie-root-port", "id": c.root_port, "chassis": i, "slot": i, "bus": "pcie.0"}
                      for i, c in enumerate(topo.controllers, 1) if c.hotplug}
        cmdline = " ".join(filter(None, [self.image.cmdline, topo.kernel_args(),
                                         TCG_KERNEL_ARGS if self.accel == "tcg" else ""]))
        text = render("qemu/argv.j2", qemu=self.qemu.argv(), name=self.name, topology=topo, accel=self.accel,
                      bios=self.qemu.firmware(BIOS),
                      cpu=cpu.model(self.accel),
                      image=self.image, cmdline=cmdline, overlay=self.run_dir / "root.qcow2", ssh_port=ssh_port,
                      run_dir=self.run_dir, console_log=self.artifacts / "console.log", blockdevs=blockdevs,
                      objects=objects, root_ports=root_ports, shares=self.shares, attached={c.id for c in attached},
                      incoming=self.restore is not None, traces=self._traces())
        return [line for line in text.splitlines() if line]

    def _traces(self) -> list[str]:
        return [ACPI_TRACE + "*"] if any(t.startswith(ACPI_TRACE) for t in self.qemu.trace_events) else []

    # -- launch and readiness -----------------------------------------------------------------

    def __enter__(self) -> "Machine":
        return self.launch()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def launch(self) -> "Machine":
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
                                 qemu=str(self.qemu.path))
            registry.save(self.record)
        try:
            for boot in range(1, BOOTS + 1):
                self._prepare_disks()
                self._start_qemu()
                if self.restore is not None:
                    self._load(self.restore)
                try:
                    self.wait_ready(self.boot_timeout)
                    break
                except KernelBrokeAtBoot as e:
                    if boot == BOOTS:
                        raise
                    self._discard_boot(boot, str(e).splitlines()[0])
        except BaseException:
            self.shutdown(graceful=False)
            raise
        return self

    def _discard_boot(self, boot: int, why: str) -> None:
        """Throw a boot whose kernel panicked or stalled away (QEMU, its disks; its console log is kept) so
        the next one starts from the image again."""
        kept = self.artifacts / f"console-boot{boot}.log"
        self._log(f"boot {boot} failed ({why}); booting again, that boot's console is in {kept.name}")
        self._stop(graceful=False)
        self._close_channels()
        self._wait_exit(5)
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
        for c in self.topology.controllers:
            for nsid, ns in enumerate(c.namespaces, 1):
                with open(self.backing(c, nsid), "wb") as f:
                    f.truncate(ns.size_mib << 20)
            if c.pmr_size_mib:
                with open(self.run_dir / "nvme" / f"{c.id}.pmr", "wb") as f:
                    f.truncate(c.pmr_size_mib << 20)

    def _start_qemu(self, attempts: int = 5) -> None:
        assert self.record is not None
        for attempt in range(1, attempts + 1):
            port = free_port()
            argv = self.argv(port)
            (self.artifacts / "qemu.argv").write_text(shlex.join(argv) + "\n")
            # Owned VMs die with tbctl (pdeathsig); `up` VMs live on in their own session until `down`.
            wrapper = [] if self.persistent else ["setpriv", "--pdeathsig", "KILL", "--"]
            stderr = open(self.artifacts / "qemu.stderr", "ab")
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
                self.console = Console(self.run_dir / "console.sock", self.name)
                self.console.connect(10, self.qemu_alive)
                self._qmp = QMP(self.run_dir / "qmp.sock", self.artifacts / "qmp-events.jsonl", self.name,
                                self.unplug_stopped)
                self._qmp.connect(10, self.qemu_alive)
                return
            except MachineError:
                self._close_channels()
                self._wait_exit(5)
                err = (self.artifacts / "qemu.stderr").read_text(errors="replace")
                if _PORT_IN_USE in err and attempt < attempts:
                    continue  # another process took the port between our check and QEMU's bind
                raise MachineError(f"{self.name}: QEMU failed to start (exit {self._proc.returncode}): "
                                   f"{err.strip()[-1500:]}") from None

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
        if self._crash is None:
            bt, frames = "", []
            core = qemu_core.find(self.run_dir, self.record.pid if self.record else None)
            if core is not None:
                bt = qemu_core.backtrace(self.qemu.path, core)
                frames = qemu_core.crashing_frames(bt, self.qemu.path)
                (self.artifacts / "qemu-core.bt.txt").write_text(bt)
                core.unlink()
            stderr = (self.artifacts / "qemu.stderr").read_text(errors="replace")
            self._crash = crash.qemu_findings(stderr, self.returncode, bt, frames,
                                              list(self._qmp.sent) if self._qmp else [])
            self._log(f"QEMU died (exit {self.returncode}): {self._crash[0].title}")
        return self._crash

    def unplug_stopped(self) -> str:
        """Where the last device_del stopped, from QEMU's ACPI hotplug trace in its stderr; when QEMU
        unrealized the device, whether it still has it in its object tree (unparented or not)."""
        if not self._traces():
            return f"QEMU {self.qemu.version_text} has no {ACPI_TRACE}* trace events to tell where it stopped"
        verdict = acpi_hotplug.last_unplug((self.artifacts / "qemu.stderr").read_text(errors="replace"))
        if not verdict.unrealized:
            return verdict.describe()
        try:
            peripherals = sorted(p["name"] for p in self.qmp.execute("qom-list", {"path": "/machine/peripheral"})
                                 if p["type"].startswith("child<"))
            held = f"; QEMU's /machine/peripheral now holds: {', '.join(peripherals) or 'nothing'}"
        except TbctlError as e:
            held = f"; QEMU's object tree not read ({e})"
        return verdict.describe() + held

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
        return bool(self._crash) and self._crash[0].title.startswith("QEMU")

    def settle(self, timeout: float = 30) -> None:
        """If QEMU is on its way out on its own (its console closed while nobody stopped it: it
        may still be writing its core), wait for it to be gone, so its death is seen as such."""
        if not self.stopped and self.console is not None and self.console.closed:
            self._wait_exit(timeout)

    def qemu_alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.record is not None and self.record.qemu_alive()

    def _load(self, saved: "Saved", timeout: float = 120) -> None:
        """Load a saved guest into this (incoming) QEMU; the guest runs on from where it was saved."""
        self.qmp.execute("migrate-incoming", {"uri": "exec:cat " + shlex.quote(str(saved.state))})
        deadline = time.monotonic() + timeout
        while (status := self.qmp.execute("query-status")["status"]) != "running":
            if status not in ("inmigrate", "paused", "prelaunch") or time.monotonic() > deadline:
                raise MachineError(f"{self.name}: loading {saved.state} failed or hung (status {status}); "
                                   f"qemu.stderr: {(self.artifacts / 'qemu.stderr').read_text()[-500:]}")
            time.sleep(0.05)
        self.timings["marker"] = time.monotonic()  # the saved guest was past its marker

    def wait_ready(self, timeout: float) -> None:
        """Ready = the guest printed its sshd marker (a restored one did before it was saved), a
        first SSH command succeeded, and every NVMe controller is live with its namespaces (a
        restored guest gets its hot-pluggable ones now)."""
        assert self.console is not None and self.record is not None
        deadline = time.monotonic() + timeout
        stage = "console marker"
        try:
            if self.restore is None:
                try:
                    m = self.console.wait_for([_READY, _BOOT_FAILED], timeout)
                except DeadlineError:
                    stall = _STALL.search(self.console.text)
                    if stall:
                        raise KernelBrokeAtBoot(f"{self.name}: guest boot stalled: {stall.group(0)}") from None
                    raise
                if m.group(0).startswith("Kernel panic"):
                    raise KernelBrokeAtBoot(f"{self.name}: guest boot failed: {m.group(0)}")
                if not m.group(0).startswith(MARKER_READY):
                    raise MachineError(f"{self.name}: guest boot failed: {m.group(0)}")
                self.timings["marker"] = time.monotonic()
            stage = "first SSH command"
            self.ssh.connect(max(1.0, deadline - time.monotonic()))
            # The first command arms crash reporting: udev would load pvpanic's driver only later,
            # and a test that panics the guest at once must still get GUEST_PANICKED.
            self.ssh.run("modprobe -q pvpanic-pci || true", timeout=max(1.0, deadline - time.monotonic()), check=True)
            self.timings["ready"] = time.monotonic()
            stage = "NVMe controllers in the guest"
            wanted = list(self.topology.controllers) if self.restore is not None else self.boot_controllers()
            if wanted:
                # All at once; the guest may then name them in another order than a boot would
                # (find a controller by its serial, as tbctl does, not by its kernel name).
                pci = self.qmp.execute("query-pci")
                where = {c.serial: port_address(pci, c.root_port) if self.restore is not None else pci_address(pci, c.id)
                         for c in wanted}
                watch = guest.NvmeWatch(self.ssh, [c.serial for c in wanted], True,
                                        max(1.0, deadline - time.monotonic()), self.restore is not None,
                                        addresses={s: a for s, a in where.items() if a}, reprobe=True)
                for c in wanted if self.restore is not None else []:
                    self.qmp.hot_add(c, self.backing(c, 1))
                for r in watch.result()[0].reprobed:
                    self._log(f"controller {r['serial']} at {r['address']}: the guest's probe failed "
                              f"({r['kernel']}); {r['outcome']} {r['after']} s into the wait")
            self.timings["nvme"] = time.monotonic()
        except TbctlError as e:
            raise type(e)(f"{self.name}: guest not ready ({stage}) within {timeout:g} s: {e}\n"
                          f"--- console tail ({self.artifacts / 'console.log'}) ---\n{self.console.tail()}") from None
        t = {k: round(v - self.timings["launched"], 2) for k, v in self.timings.items()}
        how = f"restored from {self.restore.dir}" if self.restore is not None else "booted"
        self._log(f"ready ({how}): sshd marker {t['marker']} s, first SSH command {t['ready']} s, "
                  f"NVMe controllers {t['nvme']} s after launch (accel {self.accel})")

    # -- channels -------------------------------------------------------------------------------

    @classmethod
    def attach(cls, rec: Record) -> "Machine":
        """A handle on a VM another tbctl process launched (`tbctl up`), for ssh/qmp/hotplug/down."""
        from orchestrator.config.topology import default, load

        topo = default() if rec.topology == "<built-in default>" else load(rec.topology)
        m = cls(topo, Image(Path(rec.image)), Path(rec.artifacts), name=rec.name, accel=rec.accel,
                persistent=rec.owner_pid is None, qemu=qemu_binary.probe(Path(rec.qemu)) if rec.qemu else None)
        m.record = rec
        return m

    @property
    def ssh(self) -> SSH:
        if self._ssh is None:
            assert self.record is not None
            self._ssh = SSH(self.record.ssh_port, self.image.client_key, self.image.host_key_pub, log=self._log_command)
        return self._ssh

    def ssh_alive(self, timeout: float = 10) -> bool:
        """Does the guest still run commands? (A test may have left it hung or dead.)"""
        try:
            self.ssh.run("true", timeout=timeout)
            return True
        except Exception:
            return False

    def connect_ssh(self, timeout: float = 15) -> SSH:
        self.ssh.connect(timeout)
        return self.ssh

    @property
    def qmp(self) -> QMP:
        if self._qmp is None:
            assert self.record is not None
            self._qmp = QMP(self.record.qmp_socket, self.artifacts / "qmp-events.jsonl", self.name,
                            self.unplug_stopped)
            self._qmp.connect(10, self.qemu_alive)
        return self._qmp

    def _log(self, msg: str) -> None:
        with open(self.artifacts / "machine.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {self.name}: {msg}\n")

    def _log_command(self, r: Result) -> None:
        with open(self.artifacts / "commands.log", "a") as f:
            f.write(f"$ {r.cmd}\n# exit {r.rc} in {r.seconds:.3f} s\n{r.stdout}{r.stderr}\n")

    # -- hotplug ----------------------------------------------------------------------------------

    def hot_remove(self, ctrl_id: str, timeout: float = 10) -> dict[str, float]:
        """device_del a controller; confirmed when the guest no longer sees it. Returns latencies (s)."""
        ctrl = self.topology.controller(ctrl_id)
        bdf = pci_address(self.qmp.execute("query-pci"), ctrl_id)
        # By its PCI address too: a controller SPDK holds (uio, vfio) has no kernel nvme device.
        watch = guest.NvmeWatch(self.ssh, [ctrl.serial], present=False, timeout=timeout,
                                addresses={ctrl.serial: bdf} if bdf else None)
        t0 = time.monotonic()
        event = self.qmp.hot_remove(ctrl, timeout)
        t_event = event["host_time"] - time.time() + time.monotonic()
        _, t_guest = watch.result()
        lat = {"guest": round(t_guest - t0, 4), "device_deleted": round(t_event - t0, 4)}
        self._log(f"hot-removed {ctrl_id}: {lat}")
        return lat

    def hot_add(self, ctrl_id: str, timeout: float = 10) -> dict[str, float]:
        """blockdev-add + device_add a controller; confirmed when the guest has its namespace."""
        ctrl = self.topology.controller(ctrl_id)
        watch = guest.NvmeWatch(self.ssh, [ctrl.serial], present=True, timeout=timeout)
        t0 = time.monotonic()
        self.qmp.hot_add(ctrl, self.backing(ctrl, 1), timeout)
        state, t_guest = watch.result()
        lat = {"guest": round(t_guest - t0, 4)}
        self._log(f"hot-added {ctrl_id}: {lat} {state.controllers[ctrl.serial]}")
        return lat

    # -- shutdown ---------------------------------------------------------------------------------

    def _wait_exit(self, timeout: float) -> bool:
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

    def release(self) -> None:
        """Let go of a VM without stopping it (after `tbctl up`, or a command on a VM it started)."""
        self._close_channels()

    def _close_channels(self) -> None:
        """Close SSH, QMP and console. The closed QMP and console objects are kept: their events
        and text are still read for a test's artifacts after the VM is gone."""
        for ch in (self._ssh, self._qmp, self.console):
            if ch is not None:
                ch.close()
        self._ssh = None

    def shutdown(self, graceful: bool = True) -> str:
        """Guest poweroff -> QMP quit -> SIGTERM -> SIGKILL, each with a deadline; then remove the
        run directory and the registry record. Returns the step that ended QEMU."""
        how = "already exited"
        self.stopped = True
        if self.qemu_alive():
            how = self._stop(graceful)
        self._close_channels()
        if self._proc is not None and not self._wait_exit(5):
            how += " (QEMU did not exit after SIGKILL)"
        if self.record is not None:
            registry.remove(self.record)
        self._log(f"shut down: {how}")
        return how

    def _stop(self, graceful: bool) -> str:
        if graceful:
            try:
                ssh = self._ssh if self._ssh is not None else self.connect_ssh(3)
                ssh.run("poweroff", timeout=5)
            except Exception:  # any failure here just moves shutdown to the next, harder step
                pass
            else:
                if self._wait_exit(10):
                    return "guest poweroff"
        try:
            self.qmp.execute("quit", timeout=3)
        except TbctlError:
            pass
        if self._wait_exit(5):
            return "QMP quit"
        assert self.record is not None and self.record.pid is not None
        registry.kill(self.record.pid, self.record.pid_start)
        self._wait_exit(5)
        return "signal (QEMU ignored poweroff and quit)"

    def status(self) -> dict[str, Any]:
        assert self.record is not None
        return {"name": self.name, "alive": self.qemu_alive(), "pid": self.record.pid, "accel": self.accel,
                "ssh": f"root@127.0.0.1:{self.record.ssh_port}", "qmp": str(self.record.qmp_socket),
                "artifacts": str(self.artifacts), "owner": self.record.owner_pid or "none (tbctl up)"}

