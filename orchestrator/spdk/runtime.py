"""SPDK apps from the user's SPDK tree (--spdk-dir), run in the guest as the tree was built to run.

The tree is shared read-only over virtfs (tag "spdk") and mounted at MOUNT; its apps drive
controllers bound as SPDK's scripts/setup.sh leaves a machine (uio_pci_generic, or vfio-pci
behind a vIOMMU) from hugepage memory, with the tree's own shared libraries on
LD_LIBRARY_PATH (a --with-shared build's RUNPATH names the build host's path, not MOUNT).
An app that does not start says why in one line (spdk_diagnose). `doorbell_aers` runs SPDK's
test/nvme/doorbell_aers and judges it by the lines it prints.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import guest, image
from orchestrator.config.topology import Controller, Topology
from orchestrator.errors import DeadlineError, SSHError
from orchestrator.guest.ssh import SSH, RemoteProcess, Result
from orchestrator.report.spdk_start import diagnose
from orchestrator.spdk.rpc import DEFAULT_SOCKET
from orchestrator.spdk.tree import GuestRoot, Problem, Tree, check
from orchestrator.vm import cpu

MOUNT = "/mnt/spdk"
HUGEPAGES = 64  # enough for the NVMe example apps on two controllers
RPC_HUGEPAGES = 300  # nvmf_tgt's default buffer pools (iobuf) do not fit in fewer (seen: v26.05)
HOTPLUG = "build/examples/hotplug"
DOORBELL_AERS = "test/nvme/doorbell_aers/doorbell_aers"


class AppDidNotStart(AssertionError):
    """The tree's app exited (or fell silent) before doing its job, for a reason of the guest's
    environment, named in one line: a test failure whose first line says what to fix."""


def preflight(tree: Tree, img: image.Image, accel: str) -> list[Problem]:
    """What keeps the tree's apps from starting in `img` under `accel`, read from files alone;
    the way out names the other built images on which every need of the tree is met."""
    name = img.manifest["name"]
    cached = {i.manifest["name"]: i for i in image.list_cached() if i.root.is_dir() and i.manifest["name"] != name}
    guest, feats = GuestRoot(img.root, name), cpu.features(accel)
    what = f"QEMU -cpu {cpu.model(accel)} under {accel}"
    problems = check(tree, guest, feats, what, [])
    if problems:
        others = [GuestRoot(i.root, n) for n, i in sorted(cached.items())]
        problems = check(tree, guest, feats, what, [o for o in others if not check(tree, o, feats, what, [])])
    return problems


def driver(topo: Topology) -> str:
    """The driver SPDK's scripts/setup.sh would pick: vfio-pci when an IOMMU is there."""
    return "vfio-pci" if topo.iommu else "uio_pci_generic"


def prepare(ssh: SSH, bdfs: list[str] | None = None, drv: str = "", hugepages: int = HUGEPAGES) -> None:
    """The SPDK tree mounted, hugepages reserved, and `bdfs` bound to `drv` (an app that
    claims no local controller, such as an NVMe-oF target or host, passes none)."""
    guest.mount_share(ssh, "spdk", MOUNT)
    guest.reserve_hugepages(ssh, hugepages)
    if bdfs:
        guest.bind(ssh, bdfs, drv)


@contextmanager
def claimed(ssh: SSH, topo: Topology, ctrl: Controller) -> Iterator[str]:
    """Controller `ctrl` (its PCI address yielded) bound as SPDK's setup.sh binds it, the tree
    mounted and hugepages reserved for an app of the tree; afterwards, whatever happened, given
    back to the kernel's nvme driver and its namespace back in the guest."""
    bdf = guest.nvme_state(ssh)[ctrl.serial]["address"]
    prepare(ssh, [bdf], driver(topo), max(topo.hugepages, HUGEPAGES))
    try:
        yield str(bdf)
    finally:
        guest.bind(ssh, [bdf], "nvme")
        guest.NvmeWatch(ssh, [ctrl.serial], True, 30, expect_change=False).result()


def app(rel: str) -> str:
    """Where the guest sees the tree's app `rel`."""
    return f"{MOUNT}/{rel}"


def command(tree: Tree, rel: str, args: list[str]) -> str:
    """The guest shell command for app `rel`: the tree's libraries found, output line-buffered
    (SPDK's printf is block-buffered into a pipe), stderr with stdout, and `exec` so a signal
    reaches the app itself (see SSH.start)."""
    lib_path = tree.guest_lib_path(MOUNT)
    env = f"env LD_LIBRARY_PATH={shlex.quote(lib_path)} " if lib_path else ""
    return f"exec {env}stdbuf -oL -eL {shlex.quote(app(rel))} {shlex.join(args)} 2>&1"


@contextmanager
def running(ssh: SSH, tree: Tree, rel: str, args: list[str], ready: str, timeout: float) -> Iterator[RemoteProcess]:
    """App `rel` started, yielded once it printed a line with `ready` (spdk_nvme_perf's
    "Launching workers": its I/O begins) for a fault to land in its run; killed if it never
    does, or if it still runs when the block ends (its output is logged as it is killed)."""
    proc = ssh.start(command(tree, rel, args), timeout=timeout, label=f"SPDK {rel.rsplit('/', 1)[-1]}")
    try:
        deadline = time.monotonic() + timeout / 2
        while ready not in proc.readline(max(0.0, deadline - time.monotonic())):
            pass
        yield proc
    finally:
        if proc in ssh.active:
            proc.kill()


# Read-only apps that initialize SPDK's environment, claim the controllers and exit: the start
# probe of `tbctl spdk check` runs the first one the tree has.
PROBE_APPS: tuple[tuple[str, list[str]], ...] = (("build/bin/spdk_nvme_identify", []), ("build/examples/identify", []),
              (HOTPLUG, ["-t", "1", "-n", "0", "-r", "0"]))


def start_probe(ssh: SSH, tree: Tree, bdfs: list[str], drv: str, hugepages: int, timeout: float = 120) -> str:
    """Start one of the tree's apps in a booted guest, as the suites will; what it found, or
    AppDidNotStart with the reason only a start can tell (DPDK version refused, no OpenSSL
    config, no hugepages, a device it cannot claim)."""
    found = [(rel, args) for rel, args in PROBE_APPS if (tree.root / rel).is_file()]
    if not found:
        raise AppDidNotStart(f"the tree has none of {', '.join(r for r, _ in PROBE_APPS)} to start")
    rel, args = found[0]
    prepare(ssh, bdfs, drv, hugepages)
    res = ssh.run(command(tree, rel, args), timeout=timeout)
    output = res.stdout + res.stderr
    if res.rc != 0:
        raise not_started(rel, output, res.rc) or AppDidNotStart(f"{rel} exited {res.rc}: {_last_lines(output)}")
    claimed = sorted(set(re.findall(r"(?:NVMe Controller at|Attached to) (?:PCIE \()?([0-9a-f]{4}:[0-9a-f:.]+)",
                                    output)))
    if not claimed:
        raise AppDidNotStart(f"{rel} exited 0 but attached none of {', '.join(bdfs)}: {output.strip()[-300:]}")
    return f"{rel} started in the guest and exited 0 after {res.seconds:.1f} s; it attached {', '.join(claimed)}"


# Guest side of `serve`: exit 0 once `sock` accepts a connection, 2 when the app is gone, 1 at the deadline.
_LISTENING = """
import os, socket, sys, time
sock, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit(2)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sock)
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
    finally:
        s.close()
sys.exit(1)
"""


def serve(ssh: SSH, tree: Tree, rel: str, args: list[str], sock: str = DEFAULT_SOCKET, timeout: float = 3600,
          ready_timeout: float = 60) -> RemoteProcess:
    """Start the tree's RPC app `rel` (nvmf_tgt, spdk_tgt, bdevperf -z) listening on `sock`, and
    return once it accepts connections; a start failure says why (AppDidNotStart). The app
    runs until stopped (signal INT, SPDK's own way out) or `timeout`."""
    ssh.run(f"rm -f {shlex.quote(sock)}", timeout=10, check=True)  # a stale socket would look ready
    proc = ssh.start(command(tree, rel, [*args, "-r", sock]), timeout=timeout, label=f"SPDK {rel}")
    started = time.monotonic()
    while proc.pid is None and not proc.poll():
        if time.monotonic() - started > 30:
            proc.kill()
            raise DeadlineError(f"SPDK {rel}: the guest did not start it within 30 s (killed)")
        time.sleep(0.05)
    res = ssh.run(f"python3 -c {shlex.quote(_LISTENING)} {shlex.quote(sock)} {proc.pid or 0} {ready_timeout:g}",
                  timeout=ready_timeout + 30)
    if res.rc == 0:
        return proc
    if res.rc == 2:
        out, why = proc.wait().stdout, "exited"
    else:
        proc.kill()
        out, why = proc.output(), f"did not listen on {sock} within {ready_timeout:g} s"
    raise (not_started(f"SPDK {rel}", out, proc.exit_status)
           or AppDidNotStart(f"SPDK {rel} {why}: {_last_lines(out)}"))


def _last_lines(output: str, n: int = 3) -> str:
    """An app's last words, on one line, for a failure that matched no diagnosis."""
    return " | ".join(ln.strip() for ln in output.strip().splitlines()[-n:])


def not_started(what: str, output: str, status: int | None) -> AppDidNotStart | None:
    """AppDidNotStart with the diagnosis of `output`, if it shows a start-up failure."""
    d = diagnose(output, status)
    return AppDidNotStart(f"{what}: {d}") if d else None


# SPDK's doorbell_aers runs these cases in this order; each must end with "Success: CASE".
DOORBELL_CASES = {
    "test_write_invalid_db": "doorbell of a non-existent SQ (qid 2): Error AER info 0x0",
    "test_invalid_db_write_overflow_sq": "SQ 1 tail past its 32 entries: Error AER info 0x1",
    "test_invalid_db_write_overflow_cq": "CQ 1 head past its 32 entries: Error AER info 0x1",
}
_EXECUTING = re.compile(r"^Executing: (\w+)$")
_VERDICT = re.compile(r"^(Success|Failure): (\w+)$")
_WAITING = "Waiting for AER completion..."


@dataclass
class DoorbellAers:
    """What doorbell_aers printed: a verdict per case, and the case whose AER never came."""

    verdicts: dict[str, str] = field(default_factory=dict)
    hung: str | None = None  # interrupted (SIGINT) after waiting `aer_timeout` for its AER
    result: Result | None = None

    def feed(self, line: str) -> None:
        if m := _VERDICT.match(line.strip()):
            self.verdicts[m.group(2)] = m.group(1)

    def failures(self) -> list[str]:
        """Each case that did not print Success, and why: SPDK's app exits 0 even after Failure,
        so its exit status alone says nothing."""
        out = []
        for case, what in DOORBELL_CASES.items():
            verdict = self.verdicts.get(case)
            if verdict != "Success":
                out.append(f"{case} ({what}): {verdict or 'no verdict printed'}")
        if self.result is not None and self.result.rc != 0:
            out.append(f"exit status {self.result.rc}")
        return out

    def check(self, aer_timeout: float, why: str) -> None:
        """Raise what went wrong: AppDidNotStart when the environment kept it from starting,
        DeadlineError when an AER never came (with `why`, QEMU's reason), AssertionError naming
        each case without "Success"."""
        if not self.verdicts and self.result is not None and self.result.rc != 0:
            not_up = not_started("SPDK doorbell_aers", self.result.stdout + self.result.stderr, self.result.rc)
            if not_up:
                raise not_up
        if self.hung:
            raise DeadlineError(f"SPDK doorbell_aers: no Error AER for {self.hung} within {aer_timeout:g} s, "
                                f"interrupted; {why}; its verdicts: " + "; ".join(self.failures()),
                                what=f"doorbell_aers {self.hung}", seconds=aer_timeout)
        failed = self.failures()
        assert not failed, "SPDK doorbell_aers: " + "; ".join(failed)


def doorbell_aers(ssh: SSH, tree: Tree, bdf: str, log: Path, aer_timeout: float, step_timeout: float = 30,
                  timeout: float = 120) -> DoorbellAers:
    """Run SPDK's doorbell_aers on controller `bdf` (bound to DRIVER). The app waits for each
    Error AER with no deadline of its own: after `aer_timeout` the test-bed interrupts it with
    SIGINT, its own way out, which prints "Failure: CASE" for that case and the ones after it.
    Any other silence longer than `step_timeout` is a hang of its own (DeadlineError)."""
    cmd = command(tree, DOORBELL_AERS, ["-r", f"trtype:PCIe traddr:{bdf}"])
    proc = ssh.start(cmd, timeout=timeout, label=f"SPDK doorbell_aers on {bdf}")
    run, case, waiting = DoorbellAers(), None, False
    try:
        with open(log, "a") as f:
            while True:
                try:
                    line = proc.readline(aer_timeout if waiting else step_timeout)
                except SSHError:
                    break  # it exited; wait() below has its status
                except DeadlineError:
                    if not waiting:
                        raise DeadlineError(f"SPDK doorbell_aers printed nothing for {step_timeout:g} s "
                                            f"{f'during {case}' if case else 'while starting'}") from None
                    run.hung, waiting = case, False
                    proc.signal("INT")
                    continue
                f.write(line + "\n")
                run.feed(line)
                text = line.strip()
                if m := _EXECUTING.match(text):
                    case = m.group(1)
                waiting = text == _WAITING or (waiting and not _VERDICT.match(text))
            for line in proc.unread_lines():
                f.write(line + "\n")
                run.feed(line)
        run.result = proc.wait()
    finally:
        if proc in ssh.active:
            proc.kill()
    return run
