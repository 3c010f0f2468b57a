"""SSH into the guest with paramiko: pinned host key, bounded connect retries, bounded commands.

The host key is the one baked into the image: anything else is refused, never learned. Each
command runs under the guest's `timeout`, which kills its whole process group at the deadline;
a host-side deadline a few seconds later closes the channel in case the guest itself is stuck.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import select
import shlex
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
import tenacity

from orchestrator import logs
from orchestrator.errors import CommandFailed, DeadlineError, SSHError
from orchestrator.report import stuck_tasks
from orchestrator.report.stuck_tasks import StuckTask

KILL_GRACE = 2  # seconds between the guest's SIGTERM and SIGKILL at a command's deadline
HOST_SLACK = 5  # seconds the host waits past a command's deadline before giving the channel up
# sshd sends a command's exit status when it exits and the rest of its output after, so the output
# is whole only at the channel's EOF. A process the command left behind holding its output open
# withholds that EOF for good: this long after the exit status, what came is all there is.
EOF_AFTER_EXIT = 10
log = logging.getLogger(f"{logs.ROOT}.guest")
# paramiko's transport thread logs a failed handshake with its traceback (a guest that stopped
# answering: `tbctl down` of a panicked one); with no handler of its own, Python would print that
# on stderr. The caller has the failure as SSHError already.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_TIMEOUT_MARK = "timeout: sending signal"
_PID_MARK = "tbctl-pid "
# Signal a command's process tree in the guest. Only /proc/PID/stat is read: tools such as pgrep
# also read .../status or .../cmdline, which block on a task stuck in the kernel (an NVMe
# command that never completes), the very case this has to handle.
# The tree is read through cat: awk given the stat files itself aborts (mawk, without running END)
# when a process exits between the glob and the open, and then nothing would be signalled.
# A polite signal (INT, TERM) goes, as a terminal's Ctrl-C does, only to the descendants in the
# command's own process group: fio's jobs start sessions of their own so that its main process
# alone takes SIGINT and ends them in order. KILL, STOP and CONT reach every one.
_SIGNAL_TREE = (
    "pids=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v root={root} -v self={self} -v group={group} '{{ pid = $1; "
    "sub(/.*\\) /, \"\"); parent[pid] = $2; pgrp[pid] = $3 }} END {{ want[root] = 1; if (self) print root; "
    "more = 1; while (more) {{ more = 0; for (p in parent) if (!(p in want) && (parent[p] in want)) {{ want[p] = 1; "
    "if (!group || pgrp[p] == pgrp[root]) print p; more = 1 }} }} }}'); "
    "kill -{sig} $pids 2>/dev/null; {wait}")
# Then wait a few seconds until each is in one of `states` or gone: after SIGKILL a zombie (Z; a
# task in D state may stay), after SIGSTOP stopped (T), so the caller knows the signal took; if
# not, each task's stat line and kernel stack (report.stuck_tasks reads them; the stack is
# readable for a task stuck in the kernel, under a `timeout` all the same).
_WAIT_STATE = ("for i in 1 2 3 4 5 6 7 8 9 10; do left=$(for p in $pids; do cat /proc/$p/stat 2>/dev/null; done | "
               "awk '{{ sub(/.*\\) /, \"\"); if (index(\"{states}\", $1) == 0) n++ }} END {{ print n + 0 }}'); "
               "[ \"$left\" = 0 ] && break; sleep 0.1; done; [ \"$left\" = 0 ] || "
               "{{ for p in $pids; do s=$(cat /proc/$p/stat 2>/dev/null) && echo \"task $s\" && "
               "timeout 2 cat /proc/$p/stack 2>/dev/null | sed 's/^/  /'; done >&2; exit 3; }}")
_SETTLED = {"KILL": "Z", "STOP": "TtZ"}


@dataclass(frozen=True)
class Result:
    cmd: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def ended(self) -> str:
        """How it ended, in words: its exit status, or the signal that killed it (the guest's
        `timeout` reports a child's signal as 128+N; -1: the wrapper itself died of one)."""
        if self.rc < 0:
            return "was killed by a signal"
        if self.rc > 128:
            try:
                return f"was killed by {signal.Signals(self.rc - 128).name} (exit {self.rc})"
            except ValueError:
                pass
        return f"exited {self.rc}"

    def tail(self, lines: int = 8) -> str:
        """Its last lines of output, stderr first when it wrote any: what it said as it ended."""
        return "\n".join((self.stderr.strip() or self.stdout.strip()).splitlines()[-lines:])

    def check(self) -> Result:
        if self.rc != 0:
            raise CommandFailed(f"guest command failed (exit {self.rc}): {self.cmd}\n" + self.tail(5),
                                cmd=self.cmd, rc=self.rc, stdout=self.stdout, stderr=self.stderr)
        return self


def _retryable(e: BaseException) -> bool:
    """Network-level failures while sshd is still coming up, or too slow to answer (a loaded
    TCG host): a connection that dropped or timed out during authentication is one of those.
    Never a host key mismatch or a refused key."""
    if isinstance(e, paramiko.BadHostKeyException):
        return False
    if isinstance(e, paramiko.AuthenticationException):
        return "transport shut down" in str(e) or "timeout" in str(e).lower()
    return isinstance(e, (OSError, EOFError, paramiko.SSHException))


class SSH:
    def __init__(self, port: int, client_key: Path, host_key_pub: Path, host: str = "127.0.0.1",
                 user: str = "root", log: Callable[[Result], None] | None = None):
        self.host, self.port, self.user = host, port, user
        self._pkey = paramiko.Ed25519Key.from_private_key_file(str(client_key))
        kind, b64 = host_key_pub.read_text().split()[:2]
        self._host_key = paramiko.Ed25519Key(data=base64.b64decode(b64))
        if kind != self._host_key.get_name():
            raise SSHError(f"{host_key_pub}: expected an ssh-ed25519 host key, found {kind}")
        self._client: paramiko.SSHClient | None = None
        self._log = log
        self.active: set[RemoteProcess] = set()  # commands started and not yet waited for

    def connect(self, timeout: float) -> None:
        """Connect under one overall deadline, retrying only failures that can pass."""
        deadline = time.monotonic() + timeout

        def attempt() -> None:
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[{self.host}]:{self.port}", self._host_key.get_name(), self._host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            left = deadline - time.monotonic()
            # A short TCP connect (retried), but the key exchange, the host key check and the
            # authentication get longer: on a loaded host a TCG guest can take seconds for them.
            # The socket is ours because paramiko spends its `timeout`, the TCP connect's, on the
            # key exchange too: past it, it goes on half-negotiated and fails "No existing session",
            # and every retry met the same slow guest (CI, stop 35: 56 s of those, sshd up).
            connect, slow = max(0.5, min(3.0, left)), max(0.5, min(15.0, left))
            sock = socket.create_connection((self.host, self.port), timeout=connect)
            try:
                client.connect(self.host, self.port, username=self.user, pkey=self._pkey, sock=sock, timeout=slow,
                               banner_timeout=slow, auth_timeout=slow, channel_timeout=slow,
                               look_for_keys=False, allow_agent=False)
            except BaseException:
                client.close()
                sock.close()
                raise
            self._client = client

        try:
            for att in tenacity.Retrying(stop=tenacity.stop_after_delay(timeout),
                                         wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
                                         retry=tenacity.retry_if_exception(_retryable), reraise=True):
                with att:
                    attempt()
        except paramiko.BadHostKeyException:
            raise SSHError(f"ssh {self.host}:{self.port}: host key does not match the image's pinned key; "
                           "refusing to connect") from None
        except paramiko.AuthenticationException as e:
            raise SSHError(f"ssh {self.user}@{self.host}:{self.port}: authentication refused: {e}") from None
        except Exception as e:
            raise DeadlineError(f"ssh {self.host}:{self.port}: no session within {timeout:g} s "
                                f"({type(e).__name__}: {e})") from None

    @property
    def transport(self) -> paramiko.Transport:
        t = self._client.get_transport() if self._client else None
        if t is None or not t.is_active():
            raise SSHError(f"ssh {self.host}:{self.port}: not connected")
        return t

    def start(self, cmd: str, timeout: float = 60, stdin: bytes | None = None, label: str = "") -> RemoteProcess:
        """Start `cmd` with sh in the guest, under the guest's `timeout`, without waiting for it.

        The wrapper first reports its pid on stderr: `timeout` keeps that pid, the root of the
        command's process tree, which RemoteProcess.signal walks. A polite signal (INT, TERM) to
        that tree also reaches the `sh -c` running `cmd`, which dies of it and loses `cmd`'s exit
        status: a command meant to be stopped that way starts with `exec` (dash reports 128+N
        even when it traps the signal, so the shell cannot be taught to wait instead)."""
        wrapped = (f"echo {_PID_MARK}$$ >&2; "
                   f"exec timeout --verbose -k {KILL_GRACE} {timeout:g} sh -c {shlex.quote(cmd)}")
        try:
            chan = self.transport.open_session(timeout=10)
            chan.exec_command(wrapped)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
        except (OSError, paramiko.SSHException) as e:
            raise SSHError(f"ssh {self.host}:{self.port}: cannot start {cmd!r}: {e}") from None
        proc = RemoteProcess(self, chan, cmd, timeout, self._log, label or cmd)
        self.active.add(proc)
        return proc

    def run(self, cmd: str, timeout: float = 60, stdin: bytes | None = None, check: bool = False) -> Result:
        """Run `cmd` to completion; past `timeout` its process group is killed and DeadlineError
        says which command hung."""
        result = self.start(cmd, timeout, stdin).wait()
        return result.check() if check else result

    def put(self, local: Path, remote: str, timeout: float = 60) -> None:
        with self._sftp(timeout) as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: Path, timeout: float = 60) -> None:
        with self._sftp(timeout) as sftp:
            sftp.get(remote, str(local))

    def _sftp(self, timeout: float) -> paramiko.SFTPClient:
        sftp = paramiko.SFTPClient.from_transport(self.transport, window_size=None)
        chan = sftp.get_channel() if sftp is not None else None
        if sftp is None or chan is None:
            raise SSHError("could not open an SFTP session")
        chan.settimeout(timeout)
        return sftp

    def close(self) -> None:
        if self._client:
            self._client.close()
            self._client = None


class RemoteProcess:
    """A guest command in flight: read its output line by line while the host acts, then wait."""

    def __init__(self, ssh: SSH, chan: paramiko.Channel, cmd: str, timeout: float,
                 log: Callable[[Result], None] | None, label: str):
        self.cmd, self.timeout, self._ssh, self._chan, self._log = cmd, timeout, ssh, chan, log
        self.label = label  # how errors and deadline reports name it
        self.started = time.monotonic()
        self._host_deadline = self.started + timeout + KILL_GRACE + HOST_SLACK
        self._out, self._err = bytearray(), bytearray()
        self._consumed = 0
        self._exited_at: float | None = None
        self.stuck: list[StuckTask] = []  # after kill(): its tasks that SIGKILL did not end

    def _pump(self, until: float) -> bool:
        """Read what is there; only if nothing was, block for more until `until` (at most 1 s).
        True once exited."""
        chan = self._chan

        def drain() -> bool:
            while chan.recv_ready():
                self._out += chan.recv(65536)
            while chan.recv_stderr_ready():
                self._err += chan.recv_stderr(65536)
            return self._ended() and not chan.recv_ready() and not chan.recv_stderr_ready()

        had = len(self._out) + len(self._err)
        if drain():
            return True
        now = time.monotonic()
        if now >= self._host_deadline:
            chan.close()
            raise DeadlineError(f"guest command hung past {self.timeout:g} s and the guest did not kill it "
                                f"(is the guest stuck?): {self.cmd}", what=self.cmd, seconds=self.timeout)
        if len(self._out) + len(self._err) > had:  # a line may be complete now: the caller looks first
            return False
        remaining = min(until, self._host_deadline) - now
        if remaining > 0:
            select.select([chan], [], [], min(remaining, 1.0))
        return drain()

    def _ended(self) -> bool:
        """Exited, and all it printed has arrived (see EOF_AFTER_EXIT)."""
        if not self._chan.exit_status_ready():
            return False
        if self._chan.eof_received or self._chan.closed:
            return True
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        if time.monotonic() - self._exited_at < EOF_AFTER_EXIT:
            return False
        log.warning("%s: its output stayed open %d s after it exited (a process it left behind holds it)",
                    self.label, EOF_AFTER_EXIT)
        return True

    def readline(self, timeout: float) -> str:
        """The next line of stdout; DeadlineError if none comes within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self._out.find(b"\n", self._consumed)
            if nl >= 0:
                line = self._out[self._consumed:nl].decode(errors="replace")
                self._consumed = nl + 1
                return line
            exited = self._pump(deadline)
            if self._out.find(b"\n", self._consumed) >= 0:
                continue
            if exited:
                out = self._out[self._consumed:].decode(errors="replace") + self._stderr()
                raise SSHError(f"{self.label} exited (status {self._chan.recv_exit_status()}) before printing "
                               f"a line: {out.strip()[-1000:] or 'no output'}")
            if time.monotonic() >= deadline:
                raise DeadlineError(f"guest command printed no line within {timeout:g} s: {self.cmd}")

    def follow(self, sink: Callable[[str], object]) -> Result:
        """Until the command exits, hand each line of its stdout to `sink` as it comes (a long
        script's log grows as it runs); then its Result."""
        while True:
            exited = self._pump(time.monotonic() + 1.0)
            while (nl := self._out.find(b"\n", self._consumed)) >= 0:
                sink(self._out[self._consumed:nl].decode(errors="replace"))
                self._consumed = nl + 1
            if exited:
                if self._consumed < len(self._out):
                    sink(self._out[self._consumed:].decode(errors="replace"))
                    self._consumed = len(self._out)
                return self.wait()

    def poll(self) -> bool:
        """Take in what it printed so far, without waiting; True once it exited."""
        return self._pump(time.monotonic())

    def _stderr(self) -> str:
        """What the command wrote to stderr, without the wrapper's pid line."""
        err = self._err.decode(errors="replace")
        if err.startswith(_PID_MARK):
            err = err.split("\n", 1)[1] if "\n" in err else ""
        return err

    def output(self) -> str:
        """Everything it printed so far: stdout, then stderr."""
        return self._out.decode(errors="replace") + self._stderr()

    @property
    def exit_status(self) -> int | None:
        """Its exit status once it exited, else None."""
        return self._chan.recv_exit_status() if self._chan.exit_status_ready() else None

    def unread_lines(self) -> list[str]:
        """stdout lines that readline() has not returned yet."""
        return self._out[self._consumed:].decode(errors="replace").splitlines()

    def wait_pid(self, timeout: float) -> int | None:
        """The guest pid of the command's root once the wrapper reported it; None if the command
        ended first or nothing came within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.pid is None and not self._pump(min(deadline, time.monotonic() + 0.1)):
            if time.monotonic() >= deadline:
                break
        return self.pid

    @property
    def pid(self) -> int | None:
        """The guest pid of the command's process group leader, once the wrapper has reported it."""
        line = self._err.split(b"\n", 1)[0].decode(errors="replace")
        return int(line[len(_PID_MARK):]) if line.startswith(_PID_MARK) else None

    def signal(self, sig: str = "KILL") -> list[StuckTask]:
        """Send `sig` (KILL, INT, STOP, CONT...) to every process the command started, in the guest.

        By descent, not by process group: some tools (fio's job processes, for one) start their
        own sessions, and they keep the command's output open. After SIGKILL, the tasks that
        outlived it: stuck in the kernel (D state), where their stacks say."""
        self._pump(time.monotonic())
        if self.pid is None or self._chan.exit_status_ready():
            return []
        settled = _SETTLED.get(sig)
        wait = _WAIT_STATE.format(states=settled) if settled else "true"
        # A polite signal spares the root, the guest's `timeout`: it would pass the signal on
        # and then SIGKILL the command KILL_GRACE later, cutting a graceful shutdown short.
        polite = sig not in ("KILL", "STOP", "CONT")
        res = self._ssh.run(_SIGNAL_TREE.format(root=self.pid, self=int(not polite), group=int(polite),
                                                sig=shlex.quote(sig), wait=wait), timeout=30)
        if res.rc != 3 or settled is None:
            return []
        if sig != "KILL":
            raise SSHError(f"SIG{sig} to {self.label}: not every process took it within 1 s: {res.stderr.strip()}")
        return stuck_tasks.parse(res.stderr, settled)  # a task in D state outlives KILL: no error, a finding

    def kill(self) -> list[StuckTask]:
        """SIGKILL the command's process tree (a stopped process dies too) and let it go; what it
        printed is logged as a finished command's is (its last words say why it was stopped).
        The tasks still stuck in the kernel are returned, and kept in `stuck`."""
        try:
            self.stuck = self.signal("KILL")
            until = time.monotonic() + 5
            with contextlib.suppress(DeadlineError):  # a guest past its deadline: nothing more to read
                while not self._pump(until) and time.monotonic() < until:
                    pass
        finally:
            if self._log and self._chan.exit_status_ready():
                self._log(self._result())
            self._release()
        return self.stuck

    def _release(self) -> None:
        self._chan.close()
        self._ssh.active.discard(self)

    def _result(self) -> Result:
        return Result(self.cmd, self._chan.recv_exit_status(), self._out.decode(errors="replace"), self._stderr(),
                      time.monotonic() - self.started)

    def wait(self, timeout: float | None = None, since: tuple[str, float] | None = None) -> Result:
        """Until the command exits. If this is interrupted (a test deadline), the command stays
        registered as active, so whoever handles the interruption can still kill it. With
        `timeout`, a command still running that many seconds from now is killed (DeadlineError);
        `since` (what, its monotonic time) names the moment the caller counts from, for the message."""
        until = self._host_deadline if timeout is None else min(self._host_deadline, time.monotonic() + timeout)
        while not self._pump(until):
            if time.monotonic() >= until and timeout is not None:
                after = (f"{time.monotonic() - since[1]:.0f} s after {since[0]}" if since
                         else f"{timeout:g} s after it was told to stop")
                stuck = self.kill()
                raise DeadlineError(f"{self.label or self.cmd}: still running {after} "
                                    "(killed" + (f"; stuck in the kernel: {stuck_tasks.places(stuck)})\n"
                                                 f"stuck tasks: {stuck_tasks.describe(stuck)}" if stuck else ")"),
                                    what=self.label or self.cmd, seconds=timeout)
        self._release()
        result = self._result()
        if self._log:
            self._log(result)
        if result.rc in (124, 137) and _TIMEOUT_MARK in result.stderr:
            raise DeadlineError(f"guest command did not finish within {self.timeout:g} s and was killed: "
                                f"{self.cmd}\n" + result.stdout[-2000:] + result.stderr[-2000:], what=self.cmd,
                                seconds=self.timeout)
        return result
