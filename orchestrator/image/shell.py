"""A shell (or one command) in a guest image's own userland on the host, at native speed.

What a user builds there links against the guest's libraries and headers, so it runs in the
guest unchanged: the way to build an SPDK tree for a tbctl guest. It runs under bubblewrap:
the image's root read-only, /proc, /dev and a fresh /tmp, /run, /var/tmp and /root, the
user's directories bound read-write at their own paths, no network. Every mount lives in the
sandbox's own mount namespace, so nothing survives it, however it ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from orchestrator.errors import ConfigError, DeadlineError, ImageError
from orchestrator.image import Image

# Fresh and writable inside the sandbox: scratch space, and a HOME for tools that write there.
SCRATCH = ("/tmp", "/var/tmp", "/run", "/root")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _layer(root: Path, rel: str, targets: list[str], args: list[str], layers: list[str]) -> None:
    """Mount the image's entries of directory `rel` one by one, read-only, except where a
    target (a bind or scratch path) lies beneath one: that directory becomes a tmpfs holding
    the image's entries again (in `layers`, made read-only once the mount points exist), so the
    target's mount point can be made on a read-only image."""
    for entry in sorted((root / rel.lstrip("/")).iterdir()):
        dest = f"{rel.rstrip('/')}/{entry.name}"
        if dest in targets:
            continue
        if any(t.startswith(dest + "/") for t in targets) and entry.is_dir() and not entry.is_symlink():
            args += ["--tmpfs", dest]
            layers.append(dest)
            _layer(root, dest, targets, args, layers)
        elif entry.is_symlink():
            args += ["--symlink", os.readlink(entry), dest]
        elif not any(t.startswith(dest + "/") for t in targets):
            args += ["--ro-bind", str(entry), dest]


def argv(img: Image, binds: list[Path], command: list[str], cwd: Path | None,
         env: Mapping[str, str] | None = None) -> list[str]:
    """The bubblewrap command line for `command` in `img` with `binds` at their own paths, and
    `env` over the sandbox's few variables."""
    if not img.root.is_dir():
        raise ImageError(f"image {img.dir.name} keeps no root tree (built by an older tbctl): "
                         f"delete {img.dir} and run tbctl image build")
    for b in binds:
        if not b.is_dir():
            raise ConfigError(f"--bind {b}: not a directory")
        if str(b) in ("/", *SCRATCH, "/proc", "/dev") or str(b).startswith(("/proc/", "/dev/")):
            raise ConfigError(f"--bind {b}: not allowed; give a directory of your own (a source tree)")
    targets = sorted({*(str(b) for b in binds), *SCRATCH})
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--hostname", "tbctl-image-shell", "--clearenv"]
    for name, value in {"PATH": PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "dumb"),
                        "TBCTL_IMAGE": img.dir.name, **(env or {})}.items():
        args += ["--setenv", name, value]
    layers = ["/"]  # bwrap's own root is a tmpfs too
    _layer(img.root, "/", targets, args, layers)
    for scratch in SCRATCH:
        args += ["--tmpfs", scratch]
    if (img.root / "root").is_dir():  # the image's dotfiles, under the writable HOME
        _layer(img.root, "/root", targets, args, layers)
    args += ["--proc", "/proc", "--dev", "/dev"]
    for b in binds:
        args += ["--bind", str(b), str(b)]
    for d in layers:
        args += ["--remount-ro", d]
    where = cwd or (binds[0] if binds else Path("/root"))
    args += ["--chdir", str(where), "--"]
    return args + (command or ["/bin/bash", "-l"])


def run(img: Image, binds: list[Path], command: list[str], timeout: float | None, cwd: Path | None = None,
        output: Path | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run `command` (default: an interactive login shell) in `img`; its exit status. A command
    still running at `timeout` is killed with everything it started. `output`: a file for what it
    prints (default: the terminal)."""
    if shutil.which("bwrap") is None:
        raise ImageError("tbctl image shell needs bubblewrap (apt-get install bubblewrap)")
    binds = [b.resolve() for b in binds]
    full = argv(img, binds, command, cwd.resolve() if cwd else None, env)
    if not command:  # the user's own shell: Ctrl-C is for the programs in it, not for tbctl
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return subprocess.run(full).returncode
        finally:
            signal.signal(signal.SIGINT, previous)
    sink = open(output, "ab") if output else None  # the child keeps its own copy of the descriptor
    try:
        proc = subprocess.Popen(full, start_new_session=True, stdin=subprocess.DEVNULL if sink else None,
                                stdout=sink, stderr=subprocess.STDOUT if sink else None)
    finally:
        if sink:
            sink.close()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeadlineError(f"image shell: {' '.join(command)} did not finish within {timeout:g} s; "
                            f"killed it and everything it started") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
