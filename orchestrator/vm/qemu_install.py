"""Another QEMU from Debian, unpacked into a private prefix under tbctl's cache: the host's own
QEMU and package database are left alone.

`apt-get download` with a private sources list and state (the mirror is the host's own, read
from its apt sources) and `dpkg -x`. Every module package of the same build comes too: a QEMU
aborts loading a module of another build. The prefix's manifest tells `qemu_binary` how to run
it (QEMU_MODULE_DIR, its own data directory first).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import ConfigError, HostCommandFailed, MachineError
from orchestrator.image import apt
from orchestrator.render import render
from orchestrator.vm import qemu_binary

SOURCES = ("backports",)  # <host release>-backports: a newer QEMU built for the host's own libraries
PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "qemu-system-gui",
            "qemu-system-modules-spice", "qemu-system-modules-opengl", "qemu-block-extra")
BINARY = "root/usr/bin/qemu-system-x86_64"
MODULES = "root/usr/lib/x86_64-linux-gnu/qemu"
DATADIRS = ("root/usr/share/qemu",)
TIMEOUT = 600.0


def install(source: str, mirror: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Download and unpack QEMU from `source`; returns the binary (already probed: it runs)."""
    if source not in SOURCES:
        raise ConfigError(f"qemu install: {source!r}: must be one of {', '.join(SOURCES)}")
    codename = apt.host_codename()
    if codename is None:
        raise ConfigError("qemu install: /etc/os-release names no Debian release (VERSION_CODENAME)")
    suite = f"{codename}-{source}"
    mirror = mirror or apt.host_mirror(codename)
    prefix, work = qemu_binary.prefixes() / source, qemu_binary.prefixes() / f".{source}.partial"
    shutil.rmtree(work, ignore_errors=True)
    for d in ("lists/partial", "cache/archives/partial", "debs"):
        (work / d).mkdir(parents=True)
    (work / "sources.list").write_text(render("apt/sources.list.j2", mirror=mirror, suite=suite))
    opts = [f"-oDir::Etc::SourceList={work / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}", "-oAPT::Sandbox::User=root",
            "-oAcquire::Retries=3", "-q"]
    log(f"qemu install: {' '.join(PACKAGES)} from {mirror} {suite}")
    _run(["apt-get", *opts, "update"], work, "apt-get update")
    try:
        _run(["apt-get", *opts, "download", *PACKAGES], work / "debs", "apt-get download")
    except HostCommandFailed as e:
        if "Unable to locate package" in e.output or "has no candidate" in e.output:  # apt-get's words
            raise NoSuchQemu(f"qemu install: {mirror} {suite} carries no {PACKAGES[0]} (yet): {e}") from None
        raise
    debs = sorted((work / "debs").glob("*.deb"))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(work / "root")], work, f"dpkg-deb -x {deb.name}")
    version = debs[0].name.split("_")[1].replace("%3a", ":") if debs else "?"
    (work / qemu_binary.MANIFEST).write_text(json.dumps({
        "origin": f"Debian {suite} {version}", "binary": BINARY, "suite": suite, "mirror": mirror, "packages": [d.name for d in debs],
        "env": {"QEMU_MODULE_DIR": MODULES}, "datadirs": list(DATADIRS)}, indent=1) + "\n")
    missing = _missing_libraries(work / BINARY)
    if missing:
        raise MachineError(f"qemu install: {work / BINARY} needs {', '.join(missing)}, which this host lacks: "
                           "install the Debian packages that provide them")
    q = qemu_binary.probe(work / BINARY)  # it runs, and says what it is
    shutil.rmtree(prefix, ignore_errors=True)
    work.rename(prefix)
    shutil.rmtree(prefix / "debs")
    log(f"qemu install: QEMU {q.version_text} ({q.version_line})")
    return prefix / BINARY


class NoSuchQemu(ConfigError):
    """The source has no QEMU for this host's release."""


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MachineError(f"qemu install: {what} did not finish within {TIMEOUT:g} s (killed)") from None
    if r.returncode != 0:
        output = (r.stderr or r.stdout).strip()
        raise HostCommandFailed(f"qemu install: {what} failed (exit {r.returncode}): {output[-800:]}", cmd=cmd,
                                rc=r.returncode, output=output)


def _missing_libraries(binary: Path) -> list[str]:
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=60)
    return [ln.split()[0] for ln in r.stdout.splitlines() if "not found" in ln]
