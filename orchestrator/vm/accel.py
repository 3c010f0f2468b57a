"""Choose the accelerator: KVM only when a real guest boots under it, TCG otherwise.

On some hosts /dev/kvm opens but a Linux guest hangs at "Booting from ROM" (broken nested
virtualization). So `auto` boots the image's kernel with `tbctl.probe=1` (the initrd prints a
marker and powers off at once) under a short deadline, and caches the verdict per host boot.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.image import MARKER_PROBE, Image
from orchestrator.paths import cache_dir
from orchestrator.vm import qemu_binary

PROBE_TIMEOUT = 15.0


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def resolve(requested: str, image: Image) -> str:
    if requested == "tcg":
        return "tcg"
    if requested == "kvm":
        if not kvm_usable():
            raise ConfigError("accel: kvm requested but /dev/kvm is missing or not accessible; use tcg or auto")
        return "kvm"
    if requested != "auto":
        raise ConfigError(f"accel: must be one of auto, kvm, tcg (got {requested!r})")
    if not kvm_usable():
        return "tcg"
    verdict_file = cache_dir() / f"accel-{_boot_id()}.json"
    try:
        return str(json.loads(verdict_file.read_text())["accel"])
    except (OSError, ValueError, KeyError):
        pass
    ok, detail = probe_kvm(image)
    verdict_file.parent.mkdir(parents=True, exist_ok=True)
    verdict_file.write_text(json.dumps({"accel": "kvm" if ok else "tcg", "detail": detail, "at": time.time()}))
    return "kvm" if ok else "tcg"


def probe_kvm(image: Image, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot the image's kernel under KVM until the probe marker, killing QEMU at the deadline."""
    qemu = qemu_binary.current()
    bios = qemu.firmware("qboot.rom")
    argv = ["setpriv", "--pdeathsig", "KILL", "--", *qemu.argv(), "-accel", "kvm", "-cpu", "host", "-m", "256",
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-action", "reboot=shutdown", *(["-bios", str(bios)] if bios else []),
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", "console=ttyS0 quiet tbctl.probe=1"]
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              env=qemu.environ())
    except subprocess.TimeoutExpired:
        return False, f"KVM guest did not reach the probe marker within {timeout:g} s (killed)"
    took = time.monotonic() - started
    if MARKER_PROBE.encode() in proc.stdout:
        return True, f"KVM guest booted to the probe marker in {took:.1f} s"
    return False, f"QEMU exited {proc.returncode} without the marker: {proc.stderr.decode(errors='replace')[-300:]}"
