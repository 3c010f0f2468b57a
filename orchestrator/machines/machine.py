"""A machine ready for a test: a QEMU (vm.QemuMachine) whose guest answers over SSH, with crash
reporting armed and every NVMe controller live; hotplug confirmed by what the guest sees; a
graceful poweroff from inside the guest.
"""

from __future__ import annotations

import time

from orchestrator import guest
from orchestrator.config.topology import Controller
from orchestrator.errors import DeadlineError, SSHError
from orchestrator.guest import net
from orchestrator.guest.ssh import SSH, RemoteProcess, Result
from orchestrator.vm.machine import QemuMachine
from orchestrator.vm.qmp import pci_address, port_address

# Seconds a restored guest's hot-added controllers get to show up to a shell's looks (one SSH
# command) before the full watcher (a Python start in the guest, ~1 s under TCG) takes over.
QUICK_LOOK = 3.0


class Machine(QemuMachine):
    """A guest under QEMU, reachable and ready. `with Machine(...) as m:` launches it, waits until
    it is ready and always shuts it down."""

    STEPS = {**QemuMachine.STEPS, "ready": "first SSH command", "nvme": "NVMe controllers"}

    _ssh: SSH | None = None

    def ready_steps(self, deadline: float) -> None:
        """The console marker, then a first SSH command, then the bed's NICs with their addresses
        and every NVMe controller live with its namespaces (a restored guest gets its hot-pluggable
        ones now)."""
        super().ready_steps(deadline)
        restored = self.restore is not None
        wanted = list(self.topology.controllers) if restored else self.boot_controllers()
        self.stage = "first SSH command"
        since = len(self.console.text) if self.console else 0
        try:
            self.ssh.connect(max(1.0, deadline - time.monotonic()))
        except DeadlineError as e:
            self.hung_at_boot(e, f"gives no SSH session though its sshd was up: {e}", "its sshd was up", since)
        # A restored guest's controllers are hot-added once it answers, not as soon as it runs:
        # with the hot-add 0.2 s after the load, 1 run in 10 stalled (RCU: vCPU 0 lost its timer;
        # the cause is not known, the order is the one that never did).
        self.stage = "NVMe controllers hot-added" if restored else "NVMe controllers on the bus"
        where = self._plug(wanted)
        # A command, not just the handshake: what tests do next (a restored guest's first is the
        # look for its controllers, below). Crash reporting (pvpanic) was armed by the guest's
        # boot script before sshd started.
        if not (restored and wanted):
            self.stage = "first SSH command"
            try:
                self.ssh.run("true", timeout=max(1.0, deadline - time.monotonic()), check=True)
            except (DeadlineError, SSHError) as e:  # CI, stop 39 (QEMU 10.0): a session, then a guest gone idle
                self.hung_at_boot(e, f"runs no command though it gave an SSH session: {e}", "it gave an SSH session",
                                  since)
        self.timings["ready"] = time.monotonic()
        for nic in self.topology.nics if restored else self.boot_nics():  # a save's template has none
            self.stage = f"NIC {nic.id} on network {nic.network}" + (" hot-added" if restored else "")
            if restored:
                self.qmp.hot_add_nic(nic, self.topology.name, self.links[nic.id])
            net.address_when_probed(self.ssh, nic.mac(self.topology.name), nic.address,
                                    max(1.0, deadline - time.monotonic()))
        self.stage = "NVMe controllers in the guest"
        self._controllers_ready(wanted, where, deadline)
        self.timings["nvme"] = time.monotonic()

    def _plug(self, wanted: list[Controller]) -> dict[str, str | None]:
        """Where each of `wanted` sits (serial -> PCI address); a restored guest's are hot-added,
        all at once: the guest may then name them in another order than a boot would (find a
        controller by its serial, as tbctl does, not by its kernel name)."""
        if not wanted:
            return {}
        restored = self.restore is not None
        pci = self.qmp.execute("query-pci")
        where = {c.serial: port_address(pci, c.root_port) if restored else pci_address(pci, c.id) for c in wanted}
        for c in wanted if restored else []:
            self.qmp.hot_add(c, self.backing(c, 1))
        return where

    def _controllers_ready(self, wanted: list[Controller], where: dict[str, str | None], deadline: float) -> None:
        """Every controller live with its namespace. The usual case, a shell sees it at once (or
        within a moment of a restored guest's hot-add); otherwise the full watcher waits, and
        probes again a controller whose kernel probe failed."""
        if not wanted:
            return
        serials = [c.serial for c in wanted]
        left = max(1.0, deadline - time.monotonic())
        if guest.all_present(self.ssh, serials, left, wait=min(left, QUICK_LOOK) if self.restore is not None else 0):
            return
        watch = guest.NvmeWatch(self.ssh, serials, True, max(1.0, deadline - time.monotonic()), False,
                                addresses={s: a for s, a in where.items() if a}, reprobe=True)
        for r in watch.result()[0].reprobed:
            self.log(f"controller {r['serial']} at {r['address']}: the guest's probe failed "
                     f"({r['kernel']}); {r['outcome']} {r['after']} s into the wait")

    # -- the guest's channel ----------------------------------------------------------------------

    @property
    def ssh(self) -> SSH:
        if self._ssh is None:
            assert self.record is not None
            self._ssh = SSH(self.record.ssh_port, self.image.client_key, self.image.host_key_pub, log=self._log_command)
        return self._ssh

    @property
    def ssh_channel(self) -> SSH | None:
        """The SSH connection if one is open, never opening one."""
        return self._ssh

    def commands_in_flight(self) -> list[RemoteProcess]:
        """Guest commands started and not yet finished (none without an open connection)."""
        return list(self._ssh.active) if self._ssh is not None else []

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

    def _log_command(self, r: Result) -> None:
        with open(self.artifacts / "commands.log", "a") as f:
            f.write(f"$ {r.cmd}\n# exit {r.rc} in {r.seconds:.3f} s, host time {time.time():.3f}\n{r.stdout}{r.stderr}\n")

    def close_guest(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = None

    def poweroff_guest(self) -> bool:
        try:
            ssh = self._ssh if self._ssh is not None else self.connect_ssh(3)
            ssh.run("poweroff", timeout=5)
        except Exception:  # any failure here just moves shutdown to the next, harder step
            return False
        return self.wait_exit(10)

    # -- hotplug, as the guest sees it ------------------------------------------------------------

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
        self.log(f"hot-removed {ctrl_id}: {lat}")
        return lat

    def hot_add(self, ctrl_id: str, timeout: float = 10) -> dict[str, float]:
        """blockdev-add + device_add a controller; confirmed when the guest has its namespace."""
        ctrl = self.topology.controller(ctrl_id)
        watch = guest.NvmeWatch(self.ssh, [ctrl.serial], present=True, timeout=timeout)
        t0 = time.monotonic()
        self.qmp.hot_add(ctrl, self.backing(ctrl, 1), timeout)
        state, t_guest = watch.result()
        lat = {"guest": round(t_guest - t0, 4)}
        self.log(f"hot-added {ctrl_id}: {lat} {state.controllers[ctrl.serial]}")
        return lat
