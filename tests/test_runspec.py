"""The run's spec (orchestrator/config/runspec.py): written by tbctl run, read back the same, and a
spec file with a mistake refused in one line naming the file and the field, before anything boots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Tbctl

from orchestrator.config import runspec
from orchestrator.errors import ConfigError


def test_a_spec_reads_back_as_written_with_its_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = runspec.RunSpec(seed=7, jitter=0.0, snapshot=True, accel="tcg",
                           scripts=("test/nvme/sw_hotplug.sh",)).given(topology="t.toml", timeout=30.0)
    back = runspec.load(spec.dump(tmp_path / "spec.json"))
    assert back == spec.given(topology=str(tmp_path / "t.toml"))  # the same run from any directory
    assert back.jitter == 0.0 and back.known_failures is None


@pytest.mark.parametrize(("fields", "line"), [
    ({"seeds": 1}, "seeds: unknown field; allowed: topology, bed, qemu"),
    ({"accel": "fast"}, "accel: must be one of auto, kvm, tcg (got 'fast')"),
    ({"jitter": -1}, "jitter: must be a number, 0 or more (got -1)"),
    ({"timeout": 0}, "timeout: must be a number above 0 (got 0)"),
    ({"snapshot": "yes"}, "snapshot: must be true or false (got 'yes')"),
    ({"scripts": "test/nvme/nvme.sh"}, "scripts: must be a list of paths inside the SPDK tree (got 'test/nvme/nvme.sh')"),
])
def test_a_bad_spec_is_one_line_naming_its_field(tmp_path: Path, tbctl_main: Tbctl, fields: dict[str, object],
                                                 line: str) -> None:
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps(fields))
    with pytest.raises(ConfigError, match="^" + str(bad)):
        runspec.load(bad)
    r = tbctl_main("run", "sw_hotplug", "--spec", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and line in r.stderr, r.stderr
    assert not (tmp_path / "art").exists()
