"""SPDK apps from the user's SPDK tree (--spdk-dir), run in the guest on controllers SPDK owns.

The tree is shared read-only over virtfs (tag "spdk") and mounted at MOUNT; its apps drive
controllers bound to uio_pci_generic from hugepage memory, as SPDK's scripts/setup.sh leaves a
machine. `doorbell_aers` runs SPDK's test/nvme/doorbell_aers and judges it by the lines it prints.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from . import guest
from .errors import DeadlineError, SSHError
from .ssh import SSH, Result

MOUNT = "/mnt/spdk"
DRIVER = "uio_pci_generic"
HUGEPAGES = 64
HOTPLUG = "build/examples/hotplug"
DOORBELL_AERS = "test/nvme/doorbell_aers/doorbell_aers"


def prepare(ssh: SSH, bdfs: list[str], hugepages: int = HUGEPAGES) -> None:
    """The SPDK tree mounted, hugepages reserved, and `bdfs` bound to DRIVER."""
    guest.mount_share(ssh, "spdk", MOUNT)
    guest.reserve_hugepages(ssh, hugepages)
    for bdf in bdfs:
        guest.bind(ssh, bdf, DRIVER)


def app(rel: str) -> str:
    """Where the guest sees the tree's app `rel`."""
    return f"{MOUNT}/{rel}"


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
        """Raise what went wrong: DeadlineError when an AER never came (with `why`, QEMU's
        reason), AssertionError naming each case without "Success"."""
        if self.hung:
            raise DeadlineError(f"SPDK doorbell_aers: no Error AER for {self.hung} within {aer_timeout:g} s, "
                                f"interrupted; {why}; its verdicts: " + "; ".join(self.failures()))
        failed = self.failures()
        assert not failed, "SPDK doorbell_aers: " + "; ".join(failed)


def doorbell_aers(ssh: SSH, bdf: str, log: Path, aer_timeout: float, step_timeout: float = 30,
                  timeout: float = 120) -> DoorbellAers:
    """Run SPDK's doorbell_aers on controller `bdf` (bound to DRIVER). The app waits for each
    Error AER with no deadline of its own: after `aer_timeout` the test-bed interrupts it with
    SIGINT, its own way out, which prints "Failure: CASE" for that case and the ones after it.
    Any other silence longer than `step_timeout` is a hang of its own (DeadlineError)."""
    trid = f"trtype:PCIe traddr:{bdf}"
    # stdbuf: SPDK's printf output is block-buffered into a pipe; lines must arrive as printed.
    # exec: SIGINT is how the app is stopped; see SSH.start.
    cmd = f"exec stdbuf -oL -eL {shlex.quote(app(DOORBELL_AERS))} -r {shlex.quote(trid)} 2>&1"
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
