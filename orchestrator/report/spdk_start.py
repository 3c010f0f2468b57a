"""Why an SPDK app did not start, in one line, from its own words.

A table, as crash titles are (see crash.py): each row is a pattern of what the loader, DPDK's
EAL or SPDK prints when the environment is wrong, the cause in the guest's terms, and the way
out. A new start-up failure is a row here, not a branch in the code. The app's own line is kept
in the diagnosis: the message a person reads first must carry what the app said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHELL = "tbctl image shell --image IMAGE --bind TREE"


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    cause: str  # str.format()ted with the pattern's named groups
    fix: str


def _r(pattern: str, cause: str, fix: str) -> Rule:
    return Rule(re.compile(pattern, re.M), cause, fix)


RULES = (
    _r(r"error while loading shared libraries: (?P<lib>\S+): cannot open shared object file",
       "the guest has no {lib}",
       "one of the tree's own libraries needs LD_LIBRARY_PATH (tbctl sets it for the apps it starts); a "
       "system one, its package in the image recipe or a tree built in the guest's userland "
       f"({SHELL}); `tbctl spdk check` names every such library before a boot"),
    _r(r"version `(?P<ver>[^']+)' not found \(required by (?P<by>[^)]+)\)",
       "the guest's libraries lack {ver} (required by {by}): the tree was built against newer ones",
       f"build the tree in the guest's userland ({SHELL}) or use an image with a newer userland"),
    _r(r"DPDK version (?P<ver>[\d.]+) is not supported",
       "this SPDK release refuses DPDK {ver}",
       "build the tree with the DPDK it was written for (its dpdk submodule at the pinned commit)"),
    _r(r"Unrecognized DPDK version format",
       "SPDK could not read DPDK's version string",
       "build the tree with the DPDK it was written for (its dpdk submodule at the pinned commit)"),
    _r(r"Failed to initialize OpenSSL",
       "no readable OpenSSL config in the guest (spdk_env_init loads it)",
       "use an image with the openssl package (--image bookworm-spdk), or set OPENSSL_CONF"),
    _r(r"No free (?P<size>\d+ kB) hugepages reported|Cannot get hugepage information",
       "the guest has no free hugepages for DPDK",
       "reserve them: `hugepages = N` in the topology's [machine] (tbctl's suites reserve their own)"),
    _r(r"Unable to allocate requested \w+ iobuf pool size|create PDU \w+ data pool failed|"
       r"spdk_(?:msg|event)_mempool creation failed",
       "not enough free hugepage memory for the app's memory pools",
       "reserve more hugepages (`hugepages = N` in the topology; nvmf_tgt's defaults need about 300) or "
       "shrink the pools (iobuf_set_options before framework_start_init)"),
    _r(r"This system does not support \"(?P<flag>[^\"]+)\"",
       "the guest CPU lacks {flag}, which the tree was compiled for",
       "reconfigure for the guest's CPU (./configure --target-arch=x86-64-v2) and rebuild"),
    _r(r"^(?:.*: )?Illegal instruction",
       "the app died on an instruction the guest CPU lacks (compiled for another CPU)",
       "reconfigure for the guest's CPU (./configure --target-arch=x86-64-v2) and rebuild"),
    _r(r"Cannot (?:open|create lock on) .*(?P<what>/dev/(?:uio|vfio)\S*)",
       "SPDK could not open {what}",
       "bind the controller to uio_pci_generic or vfio-pci first (tbctl's suites do)"),
    _r(r"Unable to (?:initialize SPDK env|init env)|Failed to initialize DPDK|Cannot init EAL",
       "SPDK's environment (DPDK's EAL) did not initialize",
       "see the app's log: the EAL line before this one says why"),
    _r(r"(?:Failed to attach|No (?:NVMe )?controllers? found|spdk_nvme_probe\(\) failed)",
       "SPDK claimed no NVMe controller",
       "bind the controllers to uio_pci_generic or vfio-pci (tbctl's suites do) and check the address"),
)
# A cause named by the exit status alone, when no line matched.
STATUS = {
    127: ("the app or a library it needs was not found (exit 127)", "run `tbctl spdk check --spdk-dir TREE`"),
    126: ("the app could not be executed (exit 126)", "run `tbctl spdk check --spdk-dir TREE`"),
    132: ("the app died on an illegal instruction (SIGILL)", "reconfigure with --target-arch=x86-64-v2 and rebuild"),
}


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    line: str  # the app's own words
    fix: str

    def __str__(self) -> str:
        said = f' (it said: "{self.line}")' if self.line else ""
        return f"SPDK app did not start: {self.cause}{said}; {self.fix}"


def diagnose(output: str, status: int | None = None) -> Diagnosis | None:
    """The first row that matches `output`, or the exit status's meaning; None if neither."""
    for rule in RULES:
        if m := rule.pattern.search(output):
            line = output[output.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0].strip()
            return Diagnosis(rule.cause.format(**m.groupdict()), line, rule.fix)
    if status in STATUS:
        cause, fix = STATUS[status]
        last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
        return Diagnosis(cause, last, fix)
    return None
