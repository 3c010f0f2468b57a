"""Live VMs the way OpenSSH reaches hosts: `tbctl ssh-config` prints (or `--write`s) a Host block
per VM, so ssh, scp, rsync and VS Code Remote-SSH work with the VM's pinned host key; `tbctl ssh`
is OpenSSH itself with the same options; `tbctl ssh-proxy` is the ProxyCommand that finds a VM's
current port, so a written block survives the VM's restart on another port."""

from __future__ import annotations

import argparse
import functools
import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator import image
from orchestrator.cli.argtypes import SECONDS, output_file
from orchestrator.cli.live import live_record, running
from orchestrator.errors import ConfigError, DeadlineError
from orchestrator.image import Image
from orchestrator.paths import private_dir, state_dir
from orchestrator.render import render
from orchestrator.vm.registry import Record

PREFIX = "tbctl-"  # Host alias of VM NAME: tbctl-NAME
CONNECT_TIMEOUT = 10  # s: to reach the VM's sshd
# No ServerAlive* give-up: a guest that TCG and a busy host slow down answered no keepalive for
# 15 s and ssh dropped a command that was still running, silently. The connection ends when the
# VM's QEMU does (its port closes), and tbctl ssh / ssh-proxy then say so.
SSH_FAILED = 255  # OpenSSH's own status when the connection, not the command, failed
# One connection per VM that every ssh, scp and rsync of its Host block shares (OpenSSH's
# ControlMaster): the second command costs a round trip, not a key exchange. Its socket is in the
# VM's private run directory; `down` closes it, and it ends by itself when QEMU does.
MASTER = "ssh-master.sock"
PERSIST = 600  # s an unused shared connection stays open
_SOCKET_MAX = 90  # sun_path holds 107 bytes; OpenSSH binds the path plus a 17-byte temporary suffix first
_WRITTEN = "ssh-config-written"  # in the state dir: the path `--write` keeps in step


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    sp = add("ssh-config", help="OpenSSH Host blocks for live VMs: ssh -F <(tbctl ssh-config) tbctl-NAME")
    sp.add_argument("names", nargs="*", metavar="NAME", help="only these VMs (default: every live VM)")
    sp.add_argument("--write", nargs="?", type=functools.partial(output_file, parents=True), const=str(default_file()), metavar="FILE",
                    help=f"write FILE (default {default_file()}) and keep it in step with up/down, "
                         "through tbctl ssh-proxy; Include it from ~/.ssh/config")
    sp.set_defaults(fn=cmd_ssh_config)

    sp = add("ssh-proxy", help="ProxyCommand: connect stdin/stdout to a live VM's sshd")
    sp.add_argument("name")
    sp.add_argument("--timeout", type=SECONDS, default=CONNECT_TIMEOUT, help="to connect (10 s)")
    sp.set_defaults(fn=cmd_ssh_proxy)

    sp = add("ssh", help="OpenSSH into a VM: the remote command is one string for its shell (no command: a shell)")
    sp.add_argument("-t", dest="tty", action="count", default=0, help="a TTY, as ssh -t (twice: even without one here)")
    sp.add_argument("name")
    sp.add_argument("command", nargs=argparse.REMAINDER, help="after --: run by the guest's login shell")
    sp.set_defaults(fn=cmd_ssh)


def default_file() -> Path:
    return Path.home() / ".ssh" / "tbctl_config"


def options(rec: Record, proxy: bool) -> list[tuple[str, str]]:
    """The client options for one VM: its address (or the proxy), its image's key, its pinned host key."""
    img = Image(Path(rec.image))
    where = [("ProxyCommand", _proxy_command(rec.name))] if proxy else [("HostName", "127.0.0.1"),
                                                                       ("Port", str(rec.ssh_port))]
    return where + [
        ("User", "root"), ("IdentityFile", _q(img.client_key)), ("IdentitiesOnly", "yes"),
        ("UserKnownHostsFile", _q(img.dir / "known_hosts")), ("HostKeyAlias", image.HOST_KEY_ALIAS),
        ("StrictHostKeyChecking", "yes"), ("ForwardAgent", "no"), ("ForwardX11", "no"),
        ("ConnectTimeout", str(CONNECT_TIMEOUT)), ("ServerAliveInterval", "0"), ("LogLevel", "ERROR"),
        *_shared(rec)]


def _master_path(rec: Record) -> Path | None:
    path = Path(rec.run_dir) / MASTER
    return path if len(str(path)) <= _SOCKET_MAX else None


def _shared(rec: Record) -> list[tuple[str, str]]:
    """The options that share one connection to the VM (none where its socket path is too long)."""
    path = _master_path(rec)
    if path is None:
        return []
    return [("ControlMaster", "auto"), ("ControlPath", _q(path).replace("%", "%%")), ("ControlPersist", str(PERSIST))]


def close_shared(rec: Record, timeout: float = 5) -> None:
    """The VM's shared connection closed (`ssh -O exit`), if one is open: before its QEMU goes,
    so no ssh process outlives the VM by its wait for a dead peer."""
    path = _master_path(rec)
    if path is None or not path.exists():
        return
    try:
        subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={str(path).replace('%', '%%')}", "-O", "exit",
                        PREFIX + rec.name], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pass  # the master ends with the VM's connection anyway


def config(recs: list[Record], written: Path | None = None) -> str:
    hosts = [{"alias": PREFIX + r.name, "options": options(r, proxy=written is not None)} for r in recs]
    return render("ssh/config.j2", hosts=hosts, written=str(written) if written else "")


def refresh() -> None:
    """After up/down: the file `--write` made lists the VMs up now."""
    marker = state_dir() / _WRITTEN
    if marker.is_file():
        path = Path(marker.read_text().strip())
        _write(path, config(running(), path))


def cmd_ssh_config(args: argparse.Namespace) -> int:
    recs = running()
    if args.names:
        unknown = sorted(set(args.names) - {r.name for r in recs})
        if unknown:
            raise ConfigError(f"ssh-config: no running VM named {', '.join(unknown)} "
                              f"(running: {', '.join(r.name for r in recs) or 'none'})")
        recs = [r for r in recs if r.name in args.names]
    if args.write is None:
        sys.stdout.write(config(recs))
        return 0
    path = Path(args.write).expanduser().resolve()
    _write(path, config(recs, path))
    private_dir(state_dir())
    (state_dir() / _WRITTEN).write_text(f"{path}\n")
    print(f"{path}: {len(recs)} VM(s); kept in step by tbctl up/down. In ~/.ssh/config, before any Host block:\n"
          f"  Include {path}\n(VS Code: set remote.SSH.configFile to {path}; its host list ignores Include)")
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    """OpenSSH with the VM's options: its semantics exactly (one command string for the remote
    shell, stdin, exit status, -t), for as long as the VM's QEMU runs it, however slow the guest.
    When the connection, not the command, failed (OpenSSH's 255), one line says why: the VM's QEMU
    exited, or ssh could not reach or keep its sshd."""
    rec = live_record(args.name)
    argv = ["ssh", "-F", "/dev/null", *(f"-o{k}={v}" for k, v in options(rec, proxy=False))]
    argv += ["-t"] * args.tty + [PREFIX + rec.name]
    if args.command:
        argv += ["--", " ".join(args.command)]  # as ssh joins its arguments: the guest's shell parses them
    sys.stdout.flush()
    rc = _supervise(argv)
    if rc == SSH_FAILED:
        print(f"tbctl ssh: {rec.name}: {_gone(rec) or 'the SSH connection failed while its QEMU runs (see ssh above)'}",
              file=sys.stderr)
    return rc


def _supervise(argv: list[str]) -> int:
    """Run ssh in the foreground as its own program would: Ctrl-C and the terminal are its (tbctl
    waits, ignoring them); a TERM or HUP to tbctl is passed on. Its status, 128+N for a signal."""
    proc = subprocess.Popen(argv)
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.SIG_IGN), (signal.SIGQUIT, signal.SIG_IGN),
                                               (signal.SIGTERM, _forward(proc)), (signal.SIGHUP, _forward(proc)))}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 128 - rc if rc < 0 else rc


def _forward(proc: subprocess.Popen[bytes]) -> Callable[[int, object], None]:
    return lambda signum, frame: proc.send_signal(signum)


def _gone(rec: Record) -> str | None:
    """Why a VM's connection ended from the VM's side, if it did: its QEMU is no longer running."""
    if rec.qemu_alive():
        return None
    return f"its QEMU exited while the connection was open (tbctl status; its artifacts: {rec.artifacts})"


def cmd_ssh_proxy(args: argparse.Namespace) -> int:
    """Bytes between stdin/stdout and the VM's sshd until either side closes."""
    rec = live_record(args.name)
    try:
        sock = socket.create_connection(("127.0.0.1", rec.ssh_port), timeout=args.timeout)
    except OSError as e:
        raise DeadlineError(f"ssh-proxy {args.name}: sshd at 127.0.0.1:{rec.ssh_port} not reached: {e}") from None
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.buffer.fileno(), selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "vm")
    out = sys.stdout.buffer.fileno()
    with sock:
        while True:
            for key, _ in sel.select():
                if key.data == "in":
                    data = os.read(key.fd, 65536)
                    if not data:
                        sock.shutdown(socket.SHUT_WR)
                        sel.unregister(key.fd)
                        continue
                    sock.sendall(data)
                else:
                    data = sock.recv(65536)
                    if not data:
                        if why := _gone(rec):
                            print(f"tbctl ssh-proxy: {rec.name}: {why}", file=sys.stderr)
                            return 1
                        return 0
                    os.write(out, data)


def _proxy_command(name: str) -> str:
    """tbctl itself (this interpreter), with this registry when it is not the default."""
    env = f"env TBCTL_STATE={shlex.quote(os.environ['TBCTL_STATE'])} " if os.environ.get("TBCTL_STATE") else ""
    return f"{env}{shlex.quote(sys.executable)} -m orchestrator.cli ssh-proxy {shlex.quote(name)}"


def _q(path: Path) -> str:
    """A path as ssh_config reads it: double-quoted when it has blanks."""
    text = str(path)
    if '"' in text or "\n" in text:
        raise ConfigError(f"{text}: a path OpenSSH's configuration cannot hold")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)
