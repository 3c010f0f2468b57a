"""One run's settings as one frozen object: what `tbctl run`, a CI shard and `tbctl repro` build,
and what the suite engine reads, from one file (the run's `spec.json`, kept with its artifacts),
never from options spelled again on each side of the seam. Precedence is here alone: the
defaults below, then a spec file (`tbctl run --spec FILE`), then the options given."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.topology import ACCELS, Fields
from orchestrator.errors import ConfigError

SHARD_BY = ("module", "test")
_PATHS = ("topology", "bed", "spdk_dir", "spdk_conf", "known_failures", "durations", "artifacts", "results")


@dataclass(frozen=True)
class RunSpec:
    """What a run was asked for; None leaves the choice to the run (its topology's, a drawn seed)."""

    topology: Path | None = None  # a topology file; None: the built-in one
    bed: Path | None = None  # a bed file, for every suite that uses a bed; None: each suite's own
    qemu: str | None = None  # a QEMU binary; None: $TBCTL_QEMU, the topology's, else PATH's
    image: str | None = None  # an image recipe; None: the topology's, else the SPDK-ready one with a tree
    accel: str | None = None  # kvm or tcg; None: the topology's, probed
    spdk_dir: Path | None = None  # a built SPDK tree, shared read-only into the guests
    scripts: tuple[str, ...] = ()  # SPDK test scripts of that tree to run (`spdk:PATH [ARG...]`): "PATH [ARG...]"
    spdk_conf: Path | None = None  # an autorun-spdk.conf, for the tree's autorun.sh (`spdk:autorun`)
    spdk_env: tuple[str, ...] = ()  # NAME=VALUE for those scripts (SPDK's autotest variables: NET_TYPE=virt)
    faults: tuple[str, ...] = ()  # faults fired at a line those scripts print: "KIND [ARGS] after MARKER [+S]"
    timeout: float | None = None  # every test's deadline, instead of the suites' own
    seed: int | None = None  # fault timing and random choices; None: drawn by the run
    jitter: float = 0.3  # seconds: hotplug faults fire after a seeded delay below this
    snapshot: bool = False  # machines restored from a saved ready guest where the topology allows
    keep_vm: bool = False  # a failing test's machines stay up
    known_failures: Path | None = None  # an expunge list; None: every failure fails the run
    shard: str | None = None  # K/N; None: the scheduler's ($TBCTL_SHARD), else the whole run
    shard_by: str = "module"
    durations: Path | None = None  # an earlier results.json the shards are balanced by
    artifacts: Path | None = None  # None: ./tbctl-artifacts/run-TIME
    results: Path | None = None  # results.json; None: in the artifacts

    def given(self, **options: Any) -> RunSpec:
        """This spec with the options given (None: not given) on top."""
        chosen: dict[str, Any] = {k: Path(v) if k in _PATHS else v for k, v in options.items() if v is not None}
        return dataclasses.replace(self, **chosen)

    def dump(self, path: Path) -> Path:
        """The spec as a file, its paths absolute: it means the same from any directory."""
        fields = {k: str(v.resolve()) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        path.write_text(json.dumps(fields, indent=2) + "\n")
        return path


def load(path: str | Path) -> RunSpec:
    """A spec file; a mistake is one line naming the file, the field and what it must be."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the run's spec: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not a run spec (JSON): {e}") from None
    f = Fields(str(path), "", data, tuple(field.name for field in dataclasses.fields(RunSpec)))
    d = RunSpec()
    paths = {k: Path(v) for k in _PATHS if (v := f.str(k, None, what="a path")) is not None}
    jitter = _number(f, "jitter", strict=False)
    return RunSpec(**paths, qemu=f.str("qemu", None), image=f.str("image", None),
                   accel=f.str("accel", None, choices=ACCELS), timeout=_number(f, "timeout", strict=True),
                   seed=f.int("seed", None, 0, (1 << 63) - 1), jitter=d.jitter if jitter is None else jitter,
                   scripts=_strings(f, "scripts", "a list of paths inside the SPDK tree"),
                   spdk_env=_strings(f, "spdk_env", "a list of NAME=VALUE"),
                   faults=_strings(f, "faults", "a list of KIND [ARGS] after MARKER [+SECONDS]"), snapshot=f.bool("snapshot", d.snapshot), keep_vm=f.bool("keep_vm", d.keep_vm),
                   shard=f.str("shard", None), shard_by=f.str("shard_by", d.shard_by, choices=SHARD_BY) or d.shard_by)


def _strings(f: Fields, key: str, allowed: str) -> tuple[str, ...]:
    v = f.data.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise f.fail(key, allowed, v)
    return tuple(v)


def _number(f: Fields, key: str, strict: bool) -> float | None:
    """A seconds field: above 0 (`strict`) or at least 0; None when absent."""
    v = f.data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (strict and v == 0):
        raise f.fail(key, "a number above 0" if strict else "a number, 0 or more", v)
    return float(v)
