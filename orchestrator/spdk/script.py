"""An SPDK test script of the user's tree (`test/**/*.sh`), run unchanged in a guest as SPDK's CI
runs it, its output read line by line into the test's artifacts and its `run_test` steps
(report.spdk_steps) read from it; what it writes to its `output_dir` (timing, test_completions.txt,
logs, cores) is brought back with it.

The environment is what autotest_common.sh expects and cannot know on this machine: `HUGEMEM`
(MiB, for scripts/setup.sh) from the topology and the script's own apps (`-s`), since setup.sh's
default asks more hugepages than a small guest has and less than nvme.sh's stub takes;
`output_dir`, where tbctl collects from; the tree's library path, for a `--with-shared` build
whose RUNPATH names the build host."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from orchestrator.config.topology import MAX_CPUS, Topology
from orchestrator.errors import ConfigError
from orchestrator.guest.ssh import SSH, Result
from orchestrator.render import render
from orchestrator.spdk import autorun
from orchestrator.spdk.runtime import MOUNT
from orchestrator.spdk.tree import Tree

PREFIX = "spdk:"
TOPOLOGY = "spdk-ci"  # built in: the machine of a run of scripts alone that names no topology
OUTPUT_DIR = "/var/tmp/tbctl-spdk-output"
_LOWER = "/run/tbctl/spdk-tree"  # the host's tree, read-only, under the overlay
_WORK = "/var/tmp/tbctl-spdk-overlay"  # the overlay's upper layer: what the scripts write in the tree
CONF = "/var/tmp/tbctl-autorun-spdk.conf"  # autorun.sh's argument: the user's conf, as given
SETUP_HUGEMEM = 2048  # MiB: scripts/setup.sh's default, which SPDK's apps' defaults are sized for
MEMORY_MIB = 2 * SETUP_HUGEMEM  # the least a script's machine has (spdk_tgt's iSCSI pools: 512 MiB were too few)
_COLLECT_MAX = 256 << 20  # bytes: a larger file (a core of a big app) stays in the guest, and is named


def parse_target(target: str, spdk_dir: Path | None) -> str:
    """`spdk:PATH [ARG...]` of a run's selection -> "PATH [ARG...]", PATH a script of the tree
    (its arguments as SPDK's autotest passes them: `--transport=tcp`); a mistake is one line."""
    try:
        words = shlex.split(target.removeprefix(PREFIX))
    except ValueError as e:
        raise ConfigError(f"{target}: {e}") from None
    rel = words[0] if words else ""
    if spdk_dir is None:
        raise ConfigError(f"{target}: an SPDK script needs the tree it is in: --spdk-dir DIR")
    if rel in autorun.SCRIPTS or rel in autorun.SCRIPTS.values():
        rel = autorun.SCRIPTS.get(rel, rel)
        if len(words) > 1:
            raise ConfigError(f"{target}: {rel} takes no arguments here: its conf is --spdk-conf FILE")
        words = [rel]
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or p.suffix != ".sh":
        raise ConfigError(f"{target}: must be spdk:PATH [ARG...], PATH a .sh script inside the SPDK tree (e.g. "
                          "spdk:test/nvme/sw_hotplug.sh), or spdk:autorun, spdk:autotest")
    if not (spdk_dir / rel).is_file():
        raise ConfigError(f"{target}: no such script in --spdk-dir {spdk_dir}")
    if (n := cpus(spdk_dir / rel)) > MAX_CPUS:
        raise ConfigError(f"{target}: its core masks (-m) name CPU {n - 1}; a machine has at most {MAX_CPUS} vCPUs")
    return shlex.join(words)


# An SPDK app's core mask as the scripts pass it (`-m 0x1E`, `--cpumask 0xE`; SPDK's app option).
_CPUMASK = re.compile(r"(?<![\w-])(?:-m|--cpumask)[ =]['\"]?0[xX]([0-9a-fA-F]+)\b")


def cpus(script: Path) -> int:
    """The vCPUs the script's own core masks need (highest CPU named + 1; at least 1): SPDK's
    scripts assume CI VMs' CPUs (nvme.sh's stub on cores 1-3, the nvmf targets on 1-4), and an
    app given a core the guest lacks fails at once. Masks in what it sources are not seen."""
    masks = (int(m, 16) for m in _CPUMASK.findall(script.read_text(errors="replace")))
    return max((m.bit_length() for m in masks), default=1)


# An SPDK app's DPDK memory in MiB (`-s 4096`, `--mem-size=1024`), read only on a command that also
# passes a core mask, as the scripts start their apps: elsewhere `-s` is nvme-cli's port (`-s 4420`),
# an RPC's size or truncate's.
_MEMSIZE = re.compile(r"(?<![\w-])(?:-s|--mem-size)[ =]['\"]?(\d+)\b")
_HEADROOM = SETUP_HUGEMEM // 2  # MiB beside the largest app: what the script starts while it runs


def hugemem_wanted(script: Path) -> int:
    """MiB of hugepages the script's apps want: setup.sh's default, or more where an app's `-s`
    takes most of it (nvme.sh's stub, `-s 4096`, holds its memory while the other apps start).
    Sizes in what it sources are not seen."""
    commands = script.read_text(errors="replace").replace("\\\n", " ").splitlines()
    sizes = [int(m) for c in commands if _CPUMASK.search(c) for m in _MEMSIZE.findall(c)]
    return max(SETUP_HUGEMEM, max(sizes, default=0) + _HEADROOM)


def memory_mib(script: Path) -> int:
    """The least memory of the script's machine: its hugepages, as much again for the rest."""
    return max(MEMORY_MIB, 2 * hugemem_wanted(script))


def path(script: str) -> str:
    """The script's path in the tree, without its arguments."""
    return shlex.split(script)[0]


def parse_env(assignments: list[str]) -> tuple[str, ...]:
    """--spdk-env NAME=VALUE, each checked: SPDK's variables are shell names (NET_TYPE=virt)."""
    for a in assignments:
        name, eq, _ = a.partition("=")
        if not eq or not name.isidentifier():
            raise ConfigError(f"--spdk-env {a}: must be NAME=VALUE, NAME a shell variable name (e.g. NET_TYPE=virt)")
    return tuple(assignments)


def hugemem(topo: Topology, wanted: int = SETUP_HUGEMEM) -> int:
    """MiB of hugepages for setup.sh: the topology's own reservation, else what the script wants
    (hugemem_wanted) where half the guest's memory holds it, less where it does not."""
    return topo.hugepages * 2 if topo.hugepages else min(wanted, topo.memory_mib // 2)


class Script:
    """`script` of `tree` running in the guest of `ssh` (started at once). autorun.sh and autotest.sh
    get `conf` (an autorun-spdk.conf's text) as their argument, and run setup.sh themselves
    (autotest.sh does); any other script runs after setup.sh, as autotest.sh runs its tests."""

    def __init__(self, ssh: SSH, tree: Tree, script: str, topo: Topology, timeout: float,
                 user_env: tuple[str, ...] = (), conf: str | None = None):
        rel, *args = shlex.split(script)
        env = {"HUGEMEM": str(hugemem(topo, hugemem_wanted(tree.root / rel))), "output_dir": OUTPUT_DIR}
        env.update({k: v for k, _, v in (a.partition("=") for a in user_env)})  # the user's win over tbctl's
        lib_path = tree.guest_lib_path(MOUNT)
        if lib_path:
            env["LD_LIBRARY_PATH"] = lib_path
        if conf is not None:
            args = [CONF]
        body = render("guest/spdk_script.sh.j2", script=rel, args=args, mount=MOUNT, lower=_LOWER, work=_WORK,
                      tag="spdk", output_dir=OUTPUT_DIR, env=env, conf=conf, conf_path=CONF)
        self._proc = ssh.start("bash -s", timeout=timeout, stdin=body.encode(), label=f"SPDK script {script}")

    def wait(self, log: Path, each: Callable[[str], None] = lambda line: None) -> Result:
        """Until it exits (at its deadline, DeadlineError names it), its lines into `log` and to
        `each` as they come."""
        with open(log, "w", buffering=1) as f:
            def line(text: str) -> None:
                f.write(text + "\n")
                each(text)
            return self._proc.follow(line)

    def save(self, log: Path) -> list[str]:
        """All it printed, into `log` (the lines that came after an interruption too); its lines."""
        text = self._proc.output()
        log.write_text(text)
        return text.splitlines()


def collect(ssh: SSH, dest: Path, timeout: float = 120) -> list[str]:
    """Bring the script's output_dir back into `dest`; the files left behind (too large), named."""
    found = ssh.run(f"cd {shlex.quote(OUTPUT_DIR)} 2>/dev/null && find . -type f -printf '%s %P\\n'", timeout=30)
    left = []
    deadline = time.monotonic() + timeout
    for line in found.stdout.splitlines():
        size, _, rel = line.partition(" ")
        if not size.isdigit() or not rel:
            continue
        if int(size) > _COLLECT_MAX:
            left.append(f"{OUTPUT_DIR}/{rel} ({int(size) >> 20} MiB)")
            continue
        local = dest / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        ssh.get(f"{OUTPUT_DIR}/{rel}", local, timeout=max(1.0, deadline - time.monotonic()))
    return left
