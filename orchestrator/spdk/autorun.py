"""`spdk:autorun`: the tree's own autorun.sh with the user's autorun-spdk.conf, as an SPDK CI job
runs it: autobuild.sh builds the tree with the conf's options (in the guest, for the guest's CPU:
SPDK builds for `-march=native`), then autotest.sh runs the tests its `SPDK_TEST_*` flags select,
each `run_test` a step. The build writes into the script's overlay, never into the user's tree.
`spdk:autotest`: the same job's tests alone, the tree's autotest.sh with the conf, on the build
the user has (a CI job's tests in minutes where a build in a TCG guest takes most of an hour).

The conf is checked before anything boots, against what the tree itself declares: autotest_common.sh
gives each `SPDK_*` variable it reads a default (`: ${SPDK_TEST_NVME=0}`), so a name it does not
declare is a flag nothing reads (a typo runs nothing, silently, for hours), and a flag whose
default is a number takes a number (bash's `(( ))` reads `yes` as 0)."""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path

from orchestrator.errors import ConfigError

SCRIPTS = {"autorun": "autorun.sh", "autotest": "autotest.sh"}  # spdk:NAME -> the tree's script taking the conf
TIMEOUT = 4 * 3600  # s, before accelerator scaling: a build and a CI job's tests
# SPDK's Vagrant VMs, which scripts/vagrant/autorun-spdk.conf is written for (create_vbox.sh's defaults).
CPUS = 4
DECLARATIONS = "test/common/autotest_common.sh"
_DECLARED = re.compile(r"^: \$\{(SPDK_\w+)(?::?=(.*))?\}\s*$", re.M)  # `: ${NAME=0}`, `: ${NAME:=}`, `: ${NAME}`
_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_]\w*)=(.*)")


def takes_conf(script: str) -> bool:
    """Whether a run's script (as RunSpec.scripts holds it) is a CI job's, run with the conf."""
    return shlex.split(script)[0] in SCRIPTS.values()


def declared(tree: Path) -> dict[str, str]:
    """The `SPDK_*` variables the tree's autotest_common.sh declares, with their defaults."""
    try:
        text = (tree / DECLARATIONS).read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"--spdk-dir {tree}: cannot read {DECLARATIONS}: {e.strerror}") from None
    return {name: default.strip("'\"") for name, default in _DECLARED.findall(text)}


def check_conf(conf: Path, tree: Path) -> None:
    """Every line of `conf` an assignment (comments and blank lines aside), every `SPDK_*` name
    one the tree declares, with a value of the kind its default has; a mistake is one line."""
    try:
        lines = conf.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--spdk-conf {conf}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
    known = declared(tree)
    for n, line in enumerate(lines, 1):
        where = f"--spdk-conf {conf}:{n}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        if not words:
            continue
        m = _ASSIGNMENT.fullmatch(" ".join(words))
        if m is None or len(words) > (2 if words[0] == "export" else 1):
            raise ConfigError(f"{where}: must be NAME=VALUE, as in scripts/vagrant/autorun-spdk.conf, not {line.strip()!r}")
        name, value = m.groups()
        if name.startswith("SPDK_") and name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"{where}: {name} is not a variable the tree's {DECLARATIONS} declares, so nothing "
                              f"reads it" + (f" (did you mean {near[0]}?)" if near else ""))
        if name in known and known[name].isdigit() and not value.isdigit():
            raise ConfigError(f"{where}: {name} must be a number (its default is {known[name]}), not {value!r}")
