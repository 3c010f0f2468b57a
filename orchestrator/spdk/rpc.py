"""SPDK's JSON-RPC, driven from the host with SPDK's own client (the PyPI package `spdk`).

An app in the guest listens on a unix socket (/var/tmp/spdk.sock, bdevperf's -r PATH). The
host gets a unix socket of its own in a private 0700 directory; each connection to it is
relayed over the machine's SSH connection to a small relay in the guest that connects to the
app's socket. So `spdk.rpc.client.JSONRPCClient` talks to the app as it would on the same host,
and nothing listens on a network port. Every call has a deadline (the client's timeout).
"""

from __future__ import annotations

import re
import select
import shlex
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import paramiko
from spdk.rpc.client import JSONRPCClient, JSONRPCException

from orchestrator.errors import DeadlineError, MachineError, SSHError
from orchestrator.guest.ssh import SSH
from orchestrator.paths import private_dir

DEFAULT_SOCKET = "/var/tmp/spdk.sock"
# The guest half: the app's socket <-> this SSH channel's stdin/stdout, until either side closes.
_GUEST_RELAY = """
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
src = [0, s]
while src:
    for r in select.select(src, [], [])[0]:
        data = os.read(0, 65536) if r == 0 else s.recv(65536)
        if r == 0:
            src.remove(0) if not data else s.sendall(data)
            if not data:
                s.shutdown(socket.SHUT_WR)
        elif not data:
            sys.exit(0)
        else:
            os.write(1, data)
"""


class Relay:
    """A host unix socket whose connections reach `guest_socket` through `ssh`."""

    def __init__(self, ssh: SSH, guest_socket: str, run_dir: Path):
        self.ssh, self.guest_socket = ssh, guest_socket
        self._dir = Path(tempfile.mkdtemp(prefix="rpc-", dir=private_dir(run_dir)))
        self.path = str(self._dir / "spdk.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(4)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"rpc relay {guest_socket}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn: socket.socket) -> None:
        chan: paramiko.Channel | None = None
        try:
            chan = self.ssh.transport.open_session(timeout=10)
            chan.exec_command(f"python3 -c {shlex.quote(_GUEST_RELAY)} {shlex.quote(self.guest_socket)}")
            sources: list[Any] = [conn, chan]
            while not self._closed.is_set():
                ready = select.select(sources, [], [], 0.5)[0]
                if conn in ready:
                    data = conn.recv(65536)
                    if data:
                        chan.sendall(data)
                    else:  # the client is done sending: pass the EOF on, keep reading answers
                        chan.shutdown_write()
                        sources.remove(conn)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
        except (OSError, paramiko.SSHException, SSHError):
            return  # the client sees its connection close: its call fails (DeadlineError in Rpc.call)
        finally:
            conn.close()
            if chan is not None:
                chan.close()

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)
        Path(self.path).unlink(missing_ok=True)
        self._dir.rmdir()


class Rpc:
    """JSON-RPC calls to an SPDK app in the guest, each with a deadline of `timeout` seconds,
    over one relayed connection (opening one costs a guest process: ~1 s under TCG)."""

    def __init__(self, ssh: SSH, run_dir: Path, guest_socket: str = DEFAULT_SOCKET, timeout: float = 30):
        self.guest_socket, self.timeout = guest_socket, timeout
        self._relay = Relay(ssh, guest_socket, run_dir)
        self._client: JSONRPCClient | None = None

    def call(self, method: str, **params: Any) -> Any:
        """`method` with `params`; JSON-RPC errors as MachineError, no answer in time as DeadlineError."""
        try:
            if self._client is None:
                self._client = JSONRPCClient(self._relay.path, timeout=self.timeout)
            return self._client.call(method, params or None)
        except JSONRPCException as e:
            text = str(e).strip()
            if text.startswith(("Timeout while waiting", "Connection closed")):
                self._drop()
                raise DeadlineError(f"SPDK RPC {method} on {self.guest_socket}: no answer within "
                                    f"{self.timeout:g} s ({text.splitlines()[0]})") from None
            said = re.findall(r'"message": "(.*)"', text)
            raise MachineError(f"SPDK RPC {method} on {self.guest_socket} failed: "
                               f"{said[-1] if said else text.splitlines()[0]}") from None

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self._drop()
        self._relay.close()

    def __enter__(self) -> Rpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
