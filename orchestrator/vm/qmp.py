"""QMP over qemu.qmp.QMPClient, made synchronous and bounded.

qemu.qmp is asyncio-only and has no timeouts of its own. Each QMP object runs one event loop in a
private thread; every call goes through `asyncio.wait_for`, so a command QEMU never answers fails
with a DeadlineError naming the command. Every event is appended to a JSON-lines log as it
arrives and kept in memory, so waits can match events that came before the wait began.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp import QMPError as LibraryError
from qemu.qmp.protocol import Runstate

from orchestrator.config.topology import Controller, Nic
from orchestrator.errors import DeadlineError, MachineError, QMPError
from orchestrator.net.links import Link

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0


class QMP:
    def __init__(self, socket_path: Path, event_log: Path | None, name: str = "tbctl",
                 explain_unplug: Callable[[str], str] | None = None,
                 lost: Callable[[str], MachineError] | None = None):
        """`event_log` gets every event (JSON lines); the commands sent go to qmp-commands.log beside it.
        `explain_unplug` says where a removal whose DEVICE_DELETED never came stopped (the QEMU's
        owner reads that from QEMU's own trace); `lost` is the error for a call the connection's end
        cut short (the owner knows whether QEMU died, and of what)."""
        self.socket_path = socket_path
        self.explain_unplug = explain_unplug
        self._lost = lost or (lambda what: MachineError(f"{what}: not connected to QEMU"))
        self._event_log = open(event_log, "a", buffering=1) if event_log else None
        self._command_log = open(event_log.with_name("qmp-commands.log"), "a", buffering=1) if event_log else None
        self._events: list[dict[str, Any]] = []
        # The last commands sent, for the report of a QEMU that died under one of them.
        self.sent: collections.deque[str] = collections.deque(maxlen=8)
        # A device_del the guest never completed: the machine is half-unplugged for good.
        self.unplug_lost: str | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._pump_task: asyncio.Task[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}", daemon=True)
        self._thread.start()
        self._client: QMPClient = self._call(self._new_client(name), 5, "create client")

    @staticmethod
    async def _new_client(name: str) -> QMPClient:
        return QMPClient(name)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return fut.result(timeout + 2)
        except (TimeoutError, concurrent.futures.TimeoutError):
            fut.cancel()
            raise DeadlineError(f"QMP {what}: no answer from QEMU within {timeout:g} s", what=f"QMP {what}",
                                seconds=timeout) from None

    def connect(self, timeout: float = DEFAULT_TIMEOUT, alive: Callable[[], bool] = lambda: True) -> None:
        """Connect to QEMU's QMP socket, retrying until QEMU has created it (or died)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not alive():
                raise MachineError(f"QEMU exited before its QMP socket {self.socket_path} accepted a connection")
            if self.socket_path.exists():
                try:
                    self._call(self._client.connect(str(self.socket_path)), max(0.5, deadline - time.monotonic()),
                               "connect")
                    break
                except (OSError, MachineError, DeadlineError) as e:
                    last = e
                except Exception as e:  # qemu.qmp wraps socket errors in ConnectError
                    last = e
            time.sleep(0.02)
        else:
            raise DeadlineError(f"QMP socket {self.socket_path} not connectable within {timeout:g} s: {last}")
        self._pump_task = self._call(self._start_pump(), 5, "start event pump")

    async def _start_pump(self) -> asyncio.Task[None]:
        return asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        """Record every event until the connection ends, then wake any waiter."""
        client = self._client

        async def watch() -> None:
            while client.runstate == Runstate.RUNNING:
                await client.runstate_changed()
            with self._cond:
                self._closed = True
                self._cond.notify_all()

        watcher = asyncio.ensure_future(watch())
        try:
            async for event in client.events:
                self._record(dict(event))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    def _record(self, event: dict[str, Any]) -> None:
        event["host_time"] = time.time()
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        if self._event_log:
            self._event_log.write(json.dumps(event, sort_keys=True) + "\n")

    @property
    def closed(self) -> bool:
        """The connection was made and has ended since (QEMU closed it, or close() did)."""
        with self._cond:
            return self._closed

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING and not self._closed

    def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        if not self.connected:
            raise self._lost(f"QMP {cmd}")
        self.sent.append(f"{time.strftime('%H:%M:%S')} {cmd} {json.dumps(args) if args else ''}".rstrip())
        if self._command_log is not None:
            self._command_log.write(self.sent[-1] + "\n")
        try:
            return self._call(self._client.execute(cmd, args), timeout, cmd)
        except ExecuteError as e:
            raise QMPError(f"QMP {cmd} {json.dumps(args or {})}: {e}", command=cmd, arguments=args,
                           error_class=e.error.error.class_, desc=e.error.error.desc) from None
        except (LibraryError, OSError, EOFError):  # the connection ended under the call
            raise self._lost(f"QMP {cmd}") from None

    def mark(self) -> int:
        """A cursor: waits with `after=mark` only see events that arrive from now on."""
        with self._cond:
            return len(self._events)

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events[after:])

    def wait_event(self, name: str, match: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT,
                   after: int = 0) -> dict[str, Any]:
        """The first event `name` at index >= `after` whose data contains `match`."""
        match = match or {}
        deadline = time.monotonic() + timeout
        i = after
        with self._cond:
            while True:
                for ev in self._events[i:]:
                    data = ev.get("data", {})
                    if ev.get("event") == name and all(data.get(k) == v for k, v in match.items()):
                        return ev
                i = len(self._events)
                if self._closed:
                    raise self._lost(f"QMP wait for {name} {json.dumps(match) if match else ''}".rstrip())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineError(f"QMP event {name} {json.dumps(match)} did not come within {timeout:g} s",
                                        what=f"QMP event {name}", seconds=timeout)
                self._cond.wait(remaining)

    def hmp(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """What an HMP command printed (the monitor commands QMP has no counterpart for)."""
        return str(self.execute("human-monitor-command", {"command-line": command}, timeout))

    def cpu_states(self, cpus: int, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Each vCPU as QEMU holds it: its registers (HLT=1: halted; II=1: interrupts inhibited)
        and its local APIC (the timer armed or not, vectors pending in IRR, in service in ISR,
        TPR/PPR). A TCG guest at times has a vCPU that takes NMIs but no more interrupts (RCU
        stalls, SSH silent; seen in CI, cause unknown): this is where it shows which of those."""
        return "\n".join([self.hmp("info registers -a", timeout)]
                         + [self.hmp(f"info lapic {i}", timeout) for i in range(cpus)]).replace("\r\n", "\n")

    def sysrq(self, key: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Alt-SysRq-`key` on the guest's keyboard: the kernel answers even when its SSH cannot."""
        self.execute("send-key", {"keys": [{"type": "qcode", "data": k} for k in ("alt", "sysrq", key)]}, timeout)

    def unplug(self, device: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """device_del, then wait for DEVICE_DELETED; a removal that never completes is remembered
        (`unplug_lost`: the machine is half-unplugged for good) with where it stopped.

        device_del only asks the guest. Never resend it: with native PCIe hotplug a second request
        within 5 s cancels the first (Linux waits 5 s for the attention button).
        """
        mark = self.mark()
        self.execute("device_del", {"id": device}, timeout)
        try:
            return self.wait_event("DEVICE_DELETED", {"device": device}, timeout, after=mark)
        except DeadlineError:
            refused = [e for e in self.events(mark) if e["event"] == "DEVICE_UNPLUG_GUEST_ERROR"]
            why = ("the guest reported DEVICE_UNPLUG_GUEST_ERROR" if refused else
                   self.explain_unplug(device) if self.explain_unplug else "no word from the guest")
            self.unplug_lost = f"device_del {device}: no DEVICE_DELETED within {timeout:g} s: {why}"
            raise DeadlineError(self.unplug_lost, what=f"device_del {device}", seconds=timeout) from None

    def hot_remove(self, ctrl: Controller, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Unplug an NVMe controller and free its backing node."""
        if not ctrl.hotplug:
            raise MachineError(f"controller {ctrl.id} is not hot-pluggable (hotplug = false in the topology)")
        event = self.unplug(ctrl.id, timeout)
        self.execute("blockdev-del", {"node-name": ctrl.node(1)}, timeout)
        if media_node(ctrl.node(1)) in self.block_nodes(timeout):  # a fault's node, left without its parent
            self.execute("blockdev-del", {"node-name": media_node(ctrl.node(1))}, timeout)
        return event

    def block_nodes(self, timeout: float = DEFAULT_TIMEOUT) -> set[str]:
        """The names of QEMU's named block nodes."""
        return {n["node-name"] for n in self.execute("query-named-block-nodes", {"flat": True}, timeout)}

    def hot_add(self, ctrl: Controller, backing: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        """blockdev-add the namespace's backing file, then device_add the controller on its root port."""
        if not ctrl.hotplug:
            raise MachineError(f"controller {ctrl.id} is not hot-pluggable (hotplug = false in the topology)")
        self.execute("blockdev-add", blockdev(ctrl.node(1), backing), timeout)
        self.execute("device_add", ctrl.device(), timeout)

    def hot_add_nic(self, nic: Nic, machine: str, end: Link, timeout: float = DEFAULT_TIMEOUT) -> None:
        """netdev_add the NIC's end of its network, then device_add the NIC on its root port."""
        if not nic.hotplug:
            raise MachineError(f"NIC {nic.id} is not hot-pluggable (hotplug = false in the topology)")
        self.execute("netdev_add", {"type": "dgram", "id": nic.id,
                                    "local": {"type": "inet", "host": "127.0.0.1", "port": str(end.local)},
                                    "remote": {"type": "inet", "host": "127.0.0.1", "port": str(end.remote)}}, timeout)
        self.execute("device_add", nic.device(machine), timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect and stop the loop thread; never raises, QEMU may already be gone. Idempotent;
        the recorded events stay readable."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._shutdown(), timeout, "disconnect")
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        if self._event_log:
            self._event_log.close()
            self._event_log = None
        if self._command_log is not None:
            self._command_log.close()
            self._command_log = None

    async def _shutdown(self) -> None:
        if self._client.runstate != Runstate.IDLE:
            try:
                await self._client.disconnect()
            except Exception:
                pass
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)


def blockdev(node: str, path: Path) -> dict[str, Any]:
    """A raw file block node, as `-blockdev` and `blockdev-add` both take it. Its file node is
    named, so that a fault can put a node between the two at run time (faults/media.py)."""
    return {"driver": "raw", "node-name": node,
            "file": {"driver": "file", "filename": str(path), "node-name": file_node(node)}}


def file_node(node: str) -> str:
    """The file node under raw node `node`."""
    return f"{node}-file"


def media_node(node: str) -> str:
    """The blkdebug node a media fault puts between raw node `node` and its file."""
    return f"{node}-media"


def pci_device(pci: list[dict[str, Any]], qdev_id: str) -> dict[str, Any] | None:
    """Device `qdev_id` in a `query-pci` answer, behind bridges too."""
    def walk(devices: list[dict[str, Any]]) -> dict[str, Any] | None:
        for d in devices:
            if d.get("qdev_id") == qdev_id:
                return d
            if found := walk(d.get("pci_bridge", {}).get("devices", [])):
                return found
        return None

    for bus in pci:
        if found := walk(bus.get("devices", [])):
            return found
    return None


def pci_address(pci: list[dict[str, Any]], qdev_id: str) -> str | None:
    """The guest-visible BDF of device `qdev_id` (the bus numbers the guest programmed)."""
    d = pci_device(pci, qdev_id)
    return f"0000:{d['bus']:02x}:{d['slot']:02x}.{d['function']:x}" if d else None


def port_address(pci: list[dict[str, Any]], port_id: str) -> str | None:
    """The BDF a device plugged into root port `port_id` gets (function 0 of its secondary bus),
    known before the device is there."""
    d = pci_device(pci, port_id)
    bus = (d or {}).get("pci_bridge", {}).get("bus", {}).get("secondary")
    return f"0000:{bus:02x}:00.0" if bus else None
