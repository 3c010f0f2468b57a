"""SSH client behaviour against local stand-in servers: retries, deadlines, pinned host key."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.errors import DeadlineError, SSHError
from orchestrator.guest.ssh import SSH, _retryable


def keypair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    priv = tmp_path / name
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub = tmp_path / f"{name}.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return priv, pub


class _Server(paramiko.ServerInterface):
    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


def serve_ssh(sock: socket.socket, host_key: Path, slow: float = 0.0) -> None:
    """Accept one connection and run the SSH handshake with `host_key` (enough to test host key
    pinning), `slow` seconds after the accept: a guest too busy to start its side at once."""
    def run() -> None:
        conn, _ = sock.accept()
        time.sleep(slow)
        t = paramiko.Transport(conn)
        t.add_server_key(paramiko.Ed25519Key.from_private_key_file(str(host_key)))
        try:
            t.start_server(server=_Server())
            time.sleep(2)
        except Exception:
            pass
        finally:
            t.close()
    threading.Thread(target=run, daemon=True).start()


def test_retry_classification(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(keypair(tmp_path, "k")[0]))
    assert _retryable(ConnectionRefusedError())
    assert _retryable(EOFError())
    assert _retryable(paramiko.SSHException("Error reading SSH protocol banner"))
    assert not _retryable(paramiko.AuthenticationException("Authentication failed."))  # the key was refused
    assert _retryable(paramiko.AuthenticationException("Authentication failed: transport shut down or saw EOF"))
    assert _retryable(paramiko.AuthenticationException("Authentication timeout."))
    assert not _retryable(paramiko.BadHostKeyException("h", key, key))


def test_nothing_listening_fails_at_the_deadline(tmp_path: Path) -> None:
    client, _ = keypair(tmp_path, "c")
    _, host_pub = keypair(tmp_path, "h")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(DeadlineError, match=f"ssh 127.0.0.1:{port}: no session within 1.5 s"):
        SSH(port, client, host_pub).connect(1.5)
    assert time.monotonic() - t0 < 5


def test_silent_accept_like_slirp_is_retried_until_the_deadline(tmp_path: Path, listener: socket.socket) -> None:
    """slirp accepts at once while no sshd listens yet; the client must neither hang nor give up early."""
    client, _ = keypair(tmp_path, "c")
    _, host_pub = keypair(tmp_path, "h")
    accepted: list[socket.socket] = []

    def accept_and_hold() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
    threading.Thread(target=accept_and_hold, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(DeadlineError):
        SSH(listener.getsockname()[1], client, host_pub).connect(2.0)
    assert 1.5 < time.monotonic() - t0 < 7
    assert len(accepted) >= 1
    for c in accepted:
        c.close()


def test_wrong_host_key_is_refused_not_learned(tmp_path: Path, listener: socket.socket) -> None:
    client, _ = keypair(tmp_path, "c")
    _, pinned_pub = keypair(tmp_path, "pinned")
    impostor, _ = keypair(tmp_path, "impostor")
    serve_ssh(listener, impostor)
    t0 = time.monotonic()
    with pytest.raises(SSHError, match="host key does not match the image's pinned key"):
        SSH(listener.getsockname()[1], client, pinned_pub).connect(10)
    assert time.monotonic() - t0 < 5, "a host key mismatch must fail at once, not be retried"


def test_pinned_host_key_is_accepted(tmp_path: Path, listener: socket.socket) -> None:
    client, _ = keypair(tmp_path, "c")
    host, host_pub = keypair(tmp_path, "h")
    serve_ssh(listener, host)
    ssh = SSH(listener.getsockname()[1], client, host_pub)
    ssh.connect(10)
    assert ssh.transport.is_active()
    ssh.close()


def test_a_key_exchange_slower_than_the_tcp_connect_gets_its_own_deadline(tmp_path: Path,
                                                                          listener: socket.socket) -> None:
    """The TCP connect is short and retried; the handshake after it may take longer. paramiko
    spends its connect timeout on the key exchange too, and every retry met the same slow guest."""
    client, _ = keypair(tmp_path, "c")
    host, host_pub = keypair(tmp_path, "h")
    serve_ssh(listener, host, slow=4.0)
    ssh = SSH(listener.getsockname()[1], client, host_pub)
    ssh.connect(12)
    assert ssh.transport.is_active()
    ssh.close()


def test_a_failed_command_keeps_its_parts() -> None:
    """One line for a person, and the command, status and output as fields for a caller."""
    from orchestrator.errors import CommandFailed
    from orchestrator.guest.ssh import Result

    with pytest.raises(CommandFailed, match=r"^guest command failed \(exit 3\): nvme list\nno such device$") as e:
        Result("nvme list", 3, "", "no such device\n", 0.1).check()
    assert (e.value.cmd, e.value.rc, e.value.stderr) == ("nvme list", 3, "no such device\n")
    assert isinstance(e.value, SSHError)  # still what callers catching SSH failures catch


class _Chan:
    """A paramiko channel whose command has printed `lines` and is still running."""

    def __init__(self, data: bytes):
        self.data = data

    def recv_ready(self) -> bool:
        return bool(self.data)

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return False


def test_a_line_already_received_is_read_without_waiting_for_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output that arrived while the host was busy (a device_del's wait) is a complete line: the
    reader must not block on the channel for more before looking at it (it once waited 1 s on
    every event a hotplug app had reported during the host's own step)."""
    from orchestrator.guest import ssh as ssh_mod

    waits: list[float] = []
    monkeypatch.setattr(ssh_mod.select, "select", lambda r, w, x, t: waits.append(t) or ([], [], []))
    proc = ssh_mod.RemoteProcess(None, _Chan(b'{"event": "remove"}\n{"event": "insert"}\n'), "app", 60,  # type: ignore[arg-type]
                                 None, "app")
    assert [proc.readline(5), proc.readline(5)] == ['{"event": "remove"}', '{"event": "insert"}']
    assert waits == []
    with pytest.raises(DeadlineError):
        proc.readline(0.01)  # nothing more: now it waits, and only until its deadline
    assert waits and all(t <= 0.01 for t in waits)


class _ExitedChan(_Chan):
    """A channel whose command has exited with part of its output still on the way (the exit
    status overtook it, as sshd's can), which arrives, with the EOF, while the host waits."""

    closed = False

    def __init__(self, data: bytes, rest: bytes):
        super().__init__(data)
        self.rest, self.eof_received = rest, False

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def arrive(self) -> None:
        self.data, self.rest, self.eof_received = self.data + self.rest, b"", True


class _NoSSH:
    active: set[object] = set()


def test_output_that_follows_the_exit_status_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ip -o -4 addr show; ip -o link` once came back with exit 0 and only the first of its link
    lines: the wait ended at the exit status, before the output's end (the channel's EOF)."""
    from orchestrator.guest import ssh as ssh_mod

    chan = _ExitedChan(b"1: lo\n", b"2: eth1\n")
    monkeypatch.setattr(ssh_mod.select, "select", lambda r, w, x, t: chan.arrive() or ([], [], []))
    proc = ssh_mod.RemoteProcess(_NoSSH(), chan, "ip -o link", 60, None, "ip")  # type: ignore[arg-type]
    assert proc.wait().stdout == "1: lo\n2: eth1\n"


def test_output_held_open_after_the_exit_is_not_waited_for_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process the command left behind keeps the output open: no EOF ever comes, and the
    command ends EOF_AFTER_EXIT after its exit status, with what it printed."""
    from orchestrator.guest import ssh as ssh_mod

    clock = iter(range(0, 1000, 3))
    monkeypatch.setattr(ssh_mod.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(ssh_mod.select, "select", lambda r, w, x, t: ([], [], []))
    proc = ssh_mod.RemoteProcess(_NoSSH(), _ExitedChan(b"started\n", b""), "daemon &", 60, None, "d")  # type: ignore[arg-type]
    res = proc.wait()
    assert res.stdout == "started\n" and proc._exited_at is not None
    assert ssh_mod.EOF_AFTER_EXIT <= res.seconds < 60


class _MonitorSSH:
    """An SSH whose one command is a `udevadm monitor` that printed `out` and still runs."""

    def __init__(self, out: bytes):
        self.out = out

    def start(self, cmd: str, timeout: float, label: str = "") -> object:
        from orchestrator.guest import ssh as ssh_mod
        return ssh_mod.RemoteProcess(self, _Chan(self.out), cmd, timeout, None, label)  # type: ignore[arg-type]


_MONITOR = (b"monitor will print the received events for:\nUDEV - the event which udev sends out after rule "
            b"processing\n\nUDEV  [19.2] change   /devices/x/nvme0n1 (block)\nACTION=change\nDEVNAME=/dev/nvme0n1\n\n"
            b"UDEV  [19.3] add   /devices/x/nvme0n1/nvme0n1p1 (block)\nACTION=add\nDEVNAME=/dev/nvme0n1p1\n\n")


def test_uevent_wait_names_the_devices_it_saw_and_those_it_did_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition's event that never came is named, beside the events that did come (which tell
    whether udev ran at all and the kernel re-read the table)."""
    from orchestrator.guest import UeventWatch
    from orchestrator.guest import ssh as ssh_mod

    monkeypatch.setattr(ssh_mod.select, "select", lambda r, w, x, t: ([], [], []))
    watch = UeventWatch(_MonitorSSH(_MONITOR), "block", source="udev")  # type: ignore[arg-type]
    with pytest.raises(DeadlineError, match=r"no add/change for nvme0n1p2 within 0.05 s; "
                                            r"seen: change nvme0n1, add nvme0n1p1$"):
        watch.wait_devices(["nvme0n1p1", "nvme0n1p2"], ("add", "change"), timeout=0.05)
    watch = UeventWatch(_MonitorSSH(_MONITOR), "block", source="udev")  # type: ignore[arg-type]
    assert watch.wait_devices(["nvme0n1p1"], ("add",), timeout=5) < 5


def test_follow_hands_over_each_line_as_it_comes_and_the_last_unterminated_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.guest import ssh as ssh_mod

    chan = _ExitedChan(b"START TEST a\nhalf", b" a line\nEND TEST a\nno newline")
    monkeypatch.setattr(ssh_mod.select, "select", lambda r, w, x, t: chan.arrive() or ([], [], []))
    proc = ssh_mod.RemoteProcess(_NoSSH(), chan, "bash -s", 60, None, "script")  # type: ignore[arg-type]
    seen: list[str] = []
    res = proc.follow(seen.append)
    assert seen == ["START TEST a", "half a line", "END TEST a", "no newline"]
    assert res.stdout == "START TEST a\nhalf a line\nEND TEST a\nno newline"
