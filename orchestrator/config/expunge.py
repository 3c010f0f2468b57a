"""Known failures (an expunge list, as kdevops keeps): failures a team has seen, filed and chosen
to live with for now. One TOML file, validated before anything boots:

    [[known]]
    test = "nvmf_shutdown::test_target_stopped_under_io[kernel_target-kernel_host-tcp]"
    signature = "guest crashed: BUG: kernel NULL pointer dereference in kernel_sendpage"
    reason = "nvme-tcp's io_work sends on a socket its error recovery released (guest 6.1)"
    link = "https://example.org/bug/123"
    kernel = "6.1.*"                   # optional: only on these guest kernels, QEMUs, SPDK trees
    qemu = "7.2.*"
    spdk = "24.09.*"

`test` names a test as `tbctl run` does (SUITE::TEST, parameters in brackets); `signature` is the
failure as `tbctl repro` counts it (its outcome and first message line, numbers as N). In every
pattern `*` is the only wildcard, so brackets match themselves. A failure matching a rule is a
`known failure`: reported with its reason and link, never hidden, and it does not fail the run; the
same test failing any other way is still a failure. Without `signature`, any failure of the test
matches; a test the test-bed could not run (infrastructure error) never does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.topology import Fields, read_toml

VERSIONED = ("kernel", "qemu", "spdk")
_FIELDS = ("test", "signature", "reason", "link", *VERSIONED)
_LINK = re.compile(r"^(https?://\S+|[\w.-]+#\d+)$")


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(map(re.escape, pattern.split("*"))), re.DOTALL)


@dataclass(frozen=True)
class Rule:
    test: str
    reason: str
    link: str | None = None
    signature: str | None = None
    versions: tuple[tuple[str, str], ...] = ()  # (kernel|qemu|spdk, pattern)

    def matches(self, test_id: str, signature: str, versions: dict[str, str | None]) -> bool:
        """Versions the run does not know (no SPDK tree) never match a rule that names one."""
        if not _glob(self.test).fullmatch(test_id):
            return False
        if self.signature is not None and not _glob(self.signature).fullmatch(signature):
            return False
        return all((v := versions.get(k)) is not None and _glob(p).fullmatch(v) for k, p in self.versions)

    def record(self, outcome: str) -> dict[str, Any]:
        """What results.json keeps of the match: the outcome it stands for, and why it is known."""
        return {"outcome": outcome, "test": self.test, "signature": self.signature, "reason": self.reason,
                "link": self.link, **dict(self.versions)}


@dataclass(frozen=True)
class Expunge:
    rules: tuple[Rule, ...] = ()
    source: str | None = None

    def match(self, test_id: str, signature: str, versions: dict[str, str | None]) -> Rule | None:
        return next((r for r in self.rules if r.matches(test_id, signature, versions)), None)


def load(path: str | Path) -> Expunge:
    path = Path(path)
    return parse(read_toml(path, "list of known failures"), str(path))


def parse(data: dict[str, Any], source: str) -> Expunge:
    top = Fields(source, "", data, ("known",))
    entries = top.list("known")
    if not entries:
        raise top.fail("known", "at least one [[known]] table (test, reason; signature, link, "
                                "kernel, qemu, spdk optional)")
    rules = []
    for i, entry in enumerate(entries):
        f = Fields(source, f"known[{i}]", entry, _FIELDS)
        test, reason = f.str("test", None), f.str("reason", None)
        if not test or not test.strip():
            raise f.fail("test", "a test id: SUITE::TEST, with * as a wildcard", test)
        if "::" not in test and test != "*" and not test.startswith("spdk:"):
            raise f.fail("test", "SUITE::TEST (parameters in brackets), spdk:SCRIPT[::STEP], with * as a wildcard",
                         test)
        if not reason or not reason.strip():
            raise f.fail("reason", "a non-empty string: why the failure is known", reason)
        link = f.str("link", None, _LINK, what="a URL (http or https) or an issue reference like spdk#3522")
        versions = tuple((k, v) for k in VERSIONED if (v := f.str(k, None)) is not None)
        rules.append(Rule(test, reason, link, f.str("signature", None), versions))
    return Expunge(tuple(rules), source)
