"""nvmf_shutdown's test, with the stand-in spdk_nvme_perf told to end a broken RDMA connection as
SPDK #3569 did (driven by tests/test_nvmf.py): the assertion must come out as a guest crash with
its title and the core's backtrace."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.machines import Machine

_spec = importlib.util.spec_from_file_location("suite_nvmf_shutdown",
                                               Path(__file__).parents[2] / "suites" / "nvmf_shutdown.py")
assert _spec is not None and _spec.loader is not None
suite = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

BED, TIMEOUT, SPDK_HOST_APP = suite.BED, suite.TIMEOUT, suite.SPDK_HOST_APP
test_target_stopped_under_io = suite.test_target_stopped_under_io
KNOB = "/run/spdk-standin/perf-assert"


@pytest.fixture(autouse=True)
def perf_asserts(machines: dict[str, Machine]) -> Iterator[None]:
    host = machines["host"]
    host.ssh.run(f"mkdir -p /run/spdk-standin && touch {KNOB}", timeout=10, check=True)
    yield
    if host.qemu_alive():
        host.ssh.run(f"rm -f {KNOB}", timeout=10)
