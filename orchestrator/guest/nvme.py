"""Guest-side operations, run over SSH as rendered scripts (no parameter reaches a shell unquoted)."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, DeadlineError, MachineError
from orchestrator.guest.ssh import SSH, Result
from orchestrator.render import render


@dataclass(frozen=True)
class NvmeWait:
    ok: bool
    waited: float
    controllers: dict[str, Any]
    reprobed: list[dict[str, Any]]  # controllers probed again after their probe failed (NvmeWatch reprobe)


DRIVERS = ("nvme", "uio_pci_generic", "vfio-pci")


def bind(ssh: SSH, bdfs: list[str], driver: str, timeout: float = 30, rescan: bool = False) -> None:
    """Bind the PCI functions `bdfs` to `driver` (retried: a probe can race with udev), and
    verify; `rescan` first brings back functions removed from inside the guest."""
    if driver not in DRIVERS:
        raise ConfigError(f"driver {driver!r}: must be one of {', '.join(DRIVERS)}")
    script = render("guest/bind.sh.j2", bdfs=bdfs, driver=driver, rescan=rescan).encode()
    last = None
    for _ in range(3):
        last = ssh.run("sh -s", timeout=timeout, stdin=script)
        if last.ok:
            return
    assert last is not None
    raise MachineError(f"could not bind {' '.join(bdfs)} to {driver}: {last.stderr.strip()[-500:]}")


def identities(ssh: SSH) -> dict[str, dict[str, str]]:
    """BDF -> {serial, model} recorded by `bind` while the kernel nvme driver still had each one."""
    res = ssh.run('for f in /run/tbctl/nvme/*.json; do [ -e "$f" ] && printf "%s " "$(basename "$f" .json)" '
                  '&& cat "$f"; done; true', timeout=10, check=True)
    return parse_identities(res.stdout)


def parse_identities(text: str) -> dict[str, dict[str, str]]:
    """`identities`' lines, "BDF {json}"; a record cut short or not an object is named, not a parse error."""
    out = {}
    for line in text.splitlines():
        bdf, _, record = line.partition(" ")
        try:
            out[bdf] = json.loads(record)
        except ValueError:
            out[bdf] = {}
        if not isinstance(out[bdf], dict) or not {"serial", "model"} <= out[bdf].keys():
            raise MachineError(f"guest: /run/tbctl/nvme/{bdf}.json is not the identity bind recorded: {record[:200]!r}")
    return out


def mount_command(tag: str, path: str) -> str:
    """The guest's command that mounts virtfs share `tag` read-only at `path` (once)."""
    q = shlex.quote
    return (f"modprobe 9pnet_virtio && modprobe 9p && mkdir -p {q(path)} && "
            f"(mountpoint -q {q(path)} || mount -t 9p -o trans=virtio,version=9p2000.L,ro {q(tag)} {q(path)})")


def mount_share(ssh: SSH, tag: str, path: str, timeout: float = 30) -> None:
    """Mount a virtfs share of the host read-only at `path`."""
    ssh.run(mount_command(tag, path), timeout=timeout, check=True)


def reserve_hugepages(ssh: SSH, pages: int, timeout: float = 30) -> None:
    """At least `pages` free 2 MiB pages (SPDK/DPDK need them)."""
    ssh.run(f"n=$(cat /proc/sys/vm/nr_hugepages); [ $n -ge {pages:d} ] || echo {pages:d} > /proc/sys/vm/nr_hugepages; "
            f"[ $(cat /proc/sys/vm/nr_hugepages) -ge {pages:d} ]", timeout=timeout, check=True)


def _script(serials: list[str], present: bool, timeout: float, addresses: dict[str, str] | None = None,
            reprobe: bool = False) -> bytes:
    return render("guest/nvme_state.py.j2", serials=serials, present=present, timeout=timeout,
                  addresses=addresses or {}, reprobe=reprobe).encode()


def _parse(res: Result) -> NvmeWait:
    """The helper's last line; MachineError saying how it ended when that is not its verdict."""
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
        return NvmeWait(bool(data["ok"]), float(data["waited"]), dict(data["controllers"]), list(data["reprobed"]))
    except (ValueError, IndexError, KeyError, TypeError):
        raise MachineError(f"guest nvme_state helper {res.ended} without its verdict after {res.seconds:.1f} s: "
                           f"{res.tail(5) or 'no output'}") from None


def all_present(ssh: SSH, serials: list[str], timeout: float = 20, wait: float = 0.0) -> bool:
    """Whether every controller of `serials` is live with a namespace block device, now or
    within `wait` seconds: a shell's answer, ~1 s sooner under TCG than starting the Python
    watcher (NvmeWatch)."""
    script = render("guest/nvme_present.sh.j2", serials=serials, looks=1 + int(wait / 0.05))
    return ssh.run("sh -s", timeout=max(timeout, wait + 5), stdin=script.encode()).rc == 0


def nvme_state(ssh: SSH, timeout: float = 20) -> dict[str, Any]:
    """The guest's NVMe controllers by serial: kernel name, state, PCI address, block devices."""
    return _parse(ssh.run("python3 -", timeout=timeout, stdin=_script([], True, 0))).controllers


class NvmeWatch:
    """Waits in the guest until the controllers `serials` are all present (live, with a namespace
    block device) or all gone. Start it *before* the host acts: the time it reports is when the
    guest saw the change, not when we got around to asking."""

    def __init__(self, ssh: SSH, serials: list[str], present: bool, timeout: float = 10, expect_change: bool = True,
                 addresses: dict[str, str] | None = None, reprobe: bool = False):
        """`addresses` (serial -> PCI address) lets a controller held by a userspace driver
        (uio_pci_generic, vfio-pci: SPDK's) count as present, which the kernel alone cannot tell.
        `reprobe` (only for a machine getting ready: a test's own probe failure is its finding)
        probes again a controller of `addresses` whose kernel probe failed; `result()` lists them."""
        self.serials, self.present, self.timeout = serials, present, timeout
        self._proc = ssh.start("python3 -", timeout=timeout + 15,
                               stdin=_script(serials, present, timeout, addresses, reprobe))
        first = self._proc.readline(timeout + 10)
        if first not in ("armed", "already"):
            raise MachineError(f"guest NVMe watcher for {serials} did not start: {first}")
        if first == "already" and expect_change:
            self._proc.wait()
            state = "present" if present else "absent"
            raise MachineError(f"NVMe controller(s) {', '.join(serials)} already {state} in the guest before the change")

    def result(self) -> tuple[NvmeWait, float]:
        """The watcher's verdict and the host's monotonic time it arrived."""
        state = _parse(self._proc.wait())
        seen_at = time.monotonic()
        if not state.ok:
            what = "appear (live, with a namespace)" if self.present else "disappear"
            raise DeadlineError(f"guest: NVMe controller(s) {', '.join(self.serials)} did not {what} within "
                                f"{self.timeout:g} s; guest sees {json.dumps(state.controllers)}")
        return state, seen_at


class UeventWatch:
    """Uevents of one subsystem as `udevadm monitor` sees them, from the moment it is armed: the
    kernel's (`source="kernel"`, as emitted) or udev's (`source="udev"`, after its rules ran, so
    the links and permissions they make exist). Arm it *before* acting, or events are missed."""

    _HEADERS = {"kernel": "KERNEL - the kernel uevent", "udev": "UDEV - the event which udev sends out"}

    def __init__(self, ssh: SSH, subsystem: str, timeout: float = 120, source: str = "kernel"):
        self._proc = ssh.start(f"udevadm monitor --{source} --property --subsystem-match={shlex.quote(subsystem)}",
                               timeout=timeout, label=f"uevent watch ({source}, {subsystem})")
        # udevadm prints this line once its netlink socket listens: from then on nothing is missed.
        while not self._proc.readline(20).startswith(self._HEADERS[source]):
            pass

    def wait_for(self, key: str, value_prefix: str = "", timeout: float = 10) -> str:
        """The first `KEY=value` property line whose value starts with `value_prefix`."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._proc.readline(max(0.0, deadline - time.monotonic()))
            if line.startswith(f"{key}={value_prefix}"):
                return line

    def wait_devices(self, names: list[str], actions: tuple[str, ...] = ("add",), timeout: float = 10) -> float:
        """Until an event with one of `actions` came for each device (DEVNAME without /dev/);
        DeadlineError names the ones that did not. Returns the seconds waited."""
        start = time.monotonic()
        deadline, missing, event = start + timeout, set(names), {}
        seen: list[str] = []
        while missing:
            try:
                line = self._proc.readline(max(0.0, deadline - time.monotonic()))
            except DeadlineError:
                raise DeadlineError(f"uevents: no {'/'.join(actions)} for {', '.join(sorted(missing))} "
                                    f"within {timeout:g} s; seen: {', '.join(seen) or 'none'}") from None
            if line.strip():
                key, _, value = line.partition("=")
                event[key] = value
                continue
            name = event.get("DEVNAME", "").removeprefix("/dev/")
            if name:
                seen.append(f"{event.get('ACTION')} {name}")
            if event.get("ACTION") in actions:
                missing.discard(name)
            event = {}
        return time.monotonic() - start

    def close(self) -> None:
        self._proc.kill()


def settle(ssh: SSH, timeout: float = 30) -> None:
    """Until udev's event queue is empty (`udevadm settle`), within `timeout`."""
    ssh.run(f"udevadm settle --timeout={timeout:g}", timeout=timeout + 10, check=True)


def kernel_log(ssh: SSH, since: int = 0, timeout: float = 10) -> list[str]:
    """The guest kernel's log lines (dmesg) after its first `since`: what a fault made it say."""
    return ssh.run("dmesg", timeout=timeout, check=True).stdout.splitlines()[since:]
