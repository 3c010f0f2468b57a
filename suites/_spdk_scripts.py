"""SPDK's own test scripts as tests: `tbctl run spdk:test/nvme/sw_hotplug.sh --spdk-dir T`.

Each script of the user's tree runs unchanged, as SPDK's CI runs it, on a machine of its own (a
script binds drivers, reserves hugepages and starts apps as it likes: the next test gets none of
that). Its `run_test` steps are results of their own, `spdk:SCRIPT::STEP` (a failed one carries
the error line before SPDK's backtrace, and the backtrace; a step whose app printed its own
failure verdict and exited 0, as doorbell_aers does, failed too); the script is one more, which passes
when it exits 0 and no step failed. What it wrote to its output_dir is in the test's artifacts
(`output/`), beside everything it printed (`script.log`). The run's marker faults (`--fault
'remove nvme0 after "START TEST nvme_reset" +2s'`) fire on the script's machine when its output
reaches them; one that failed or never came fails a script that passed. `spdk:autorun` is a CI
job: the tree's autorun.sh with the user's autorun-spdk.conf (`--spdk-conf`, its copy in the
artifacts), which builds the tree in the guest and runs the tests the conf selects;
`spdk:autotest` runs those tests alone, on the tree as the user built it.

Not a suite to name (its name starts with "_"): `spdk:PATH` targets of `tbctl run` select it,
one test per script.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from orchestrator.engine import substeps, timeline
from orchestrator.engine.session import RUN, Run
from orchestrator.errors import TbctlError
from orchestrator.faults import marker
from orchestrator.machines.machine import Machine
from orchestrator.report import spdk_steps
from orchestrator.spdk import autorun
from orchestrator.spdk import script as spdk_script

TIMEOUT = 1200  # s, before accelerator scaling; --timeout sets another
FAULT_WAIT = 60  # s for a marker fault still firing when its script ended


class ScriptFailed(AssertionError):
    """The script exited non-zero, or a step of it failed: a test failure."""


class FaultsNotFired(AssertionError):
    """A marker fault (--fault) failed, or its marker never came: the script did not run under
    the faults asked for, whatever it says."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per script, on a machine of at least the memory SPDK's CI VMs have (more where
    its apps' `-s` take more hugepages) and the vCPUs the script's core masks name."""
    if "script" in metafunc.fixturenames:
        spec = metafunc.config.stash[RUN].settings.spec
        assert spec.spdk_dir is not None  # a script target needs its tree (checked before the run)

        def marks(s: str) -> list[pytest.MarkDecorator]:
            if autorun.takes_conf(s):  # a CI job: a build, then the tests, on a VM like SPDK's Vagrant ones
                return [pytest.mark.tb_machine(min_memory_mib=spdk_script.MEMORY_MIB, min_cpus=autorun.CPUS),
                        pytest.mark.tb_timeout(autorun.TIMEOUT)]
            path = spec.spdk_dir / spdk_script.path(s)
            return [pytest.mark.tb_machine(min_memory_mib=spdk_script.memory_mib(path),
                                           min_cpus=spdk_script.cpus(path))]
        metafunc.parametrize("script", [pytest.param(s, marks=marks(s)) for s in spec.scripts], ids=list(spec.scripts))


def report(item: pytest.Item, script: str, steps: list[spdk_steps.Step]) -> None:
    """Each step, a result of its own; one the output stopped inside takes the script's outcome."""
    for s in steps:
        status = substeps.UNFINISHED if s.status == "unfinished" else s.status
        message = ""
        if s.status == "failed":
            message = "\n".join(filter(None, [f"{s.name} failed: {s.error or 'see its backtrace'}", s.backtrace]))
        elif s.status == spdk_steps.CRASHED:  # titled as a crash anywhere else is, for repro's signatures
            message = "\n".join(filter(None, [f"{spdk_steps.CRASHED}: {s.error}", s.backtrace]))
        substeps.add(item, substeps.Step(f"{spdk_script.PREFIX}{script}::{s.name}", status, s.seconds or 0.0,
                                         message))


def test_script(script: str, fresh_machine: Machine, run: Run, artifacts: Path, marker_faults: marker.Watch,
                request: pytest.FixtureRequest) -> None:
    substeps.alias(request.node, f"{spdk_script.PREFIX}{script}")
    tree = run.spdk_tree(spdk_script.path(script))
    out = artifacts / "output"
    conf = None
    if autorun.takes_conf(script):
        assert run.settings.spec.spdk_conf is not None  # checked before the run
        conf = run.settings.spec.spdk_conf.read_text()
        (artifacts / "autorun-spdk.conf").write_text(conf)
    proc = spdk_script.Script(fresh_machine.ssh, tree, script, fresh_machine.topology,
                              timeout=run.deadline(request.node) + 60, user_env=run.settings.spec.spdk_env, conf=conf)
    followed: list[tuple[str, float]] = []  # each line as it came, and when: where the steps and faults fell

    def each(line: str) -> None:
        followed.append((line, time.time()))
        marker_faults.line(line)
    try:
        res = proc.wait(artifacts / "script.log", each)
    finally:
        unfired = marker_faults.finish(FAULT_WAIT)
        for said in marker_faults.said:
            print(said)
        lines = proc.save(artifacts / "script.log")
        steps = spdk_steps.app_crashes(lines, spdk_steps.app_verdicts(lines, spdk_steps.steps(lines)))
        report(request.node, script, steps)
        timeline.steps(request.node, [(s.name, followed[s.first][1], followed[s.last][1])
                                      for s in spdk_steps.steps([line for line, _ in followed])])
        with contextlib.suppress(TbctlError, OSError):  # a guest that died keeps its output; the outcome says why
            left = spdk_script.collect(fresh_machine.ssh, out)
            if left:
                (out / "LEFT-IN-GUEST.txt").write_text("\n".join(left) + "\n")
    failed = [s for s in steps if s.status == "failed"]
    if res.rc == 0 and not failed:
        if unfired:
            raise FaultsNotFired("\n".join(unfired))
        return
    faults = "".join(f"\n{u}" for u in unfired)
    if failed:  # the innermost failed step started last: its error is the script's
        raise ScriptFailed(f"{script} {res.ended}; failed: {', '.join(s.name for s in failed)}\n{failed[-1].error}"
                           + faults)
    why = spdk_steps.failure(lines)
    raise ScriptFailed((f"{script} {res.ended} at {why.where}\n{why.error}\n{why.backtrace}" if why
                        else f"{script} {res.ended}\n{res.tail()}") + faults)
