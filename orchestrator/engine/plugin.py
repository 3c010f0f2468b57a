"""The suite engine, as a pytest plugin: suites are pytest modules; this hands them ready machines
(engine.fixtures) and tells outcomes apart.

Registered at configure time as one Engine object (as pytest-xdist registers its session), whose
hooks stay a few lines each and call the engine's pieces: the deadline and crash watches
(engine.deadline, with its own hooks another plugin may take over), crash findings
(engine.findings), the outcome (results.outcome, a pure classifier), artifacts (engine.artifacts)
and results (engine.results). Outcomes: passed, failed, timed out, guest crashed, qemu crashed,
infrastructure error, skipped, known failure (a failure on the run's list of known failures); each
becomes a JUnit property `outcome`, and the run's results.json holds them with the run's
metadata. A machine whose test did not end passed, failed or skipped (or that lost a
device_del) is discarded; a known failure's machine too, by the outcome it stands for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import __version__, logs
from orchestrator.engine import (
    artifacts,
    attempts,
    deadline,
    findings,
    hookspecs,
    host,
    results,
    slices,
    substeps,
    timeline,
)
from orchestrator.engine.session import RUN, Run, Settings, add_options
from orchestrator.errors import DeadlineError
from orchestrator.results import outcome, repro, shard
from orchestrator.vm import qemu_binary

pytest_plugins = ["orchestrator.engine.fixtures"]
log = logging.getLogger(f"{logs.ROOT}.engine")
HOST_BEFORE = pytest.StashKey[host.Sample]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tb_timeout(seconds): this test's deadline, before accelerator scaling")
    config.addinivalue_line("markers", "tb_machine(**fields): this test's machine differs from the run's "
                                       "topology in these fields (e.g. iommu=True; min_memory_mib=4096: "
                                       "at least that)")
    run = config.stash[RUN] = Run(Settings.load(config.getoption("tb_spec")))
    config.pluginmanager.register(deadline.SignalTimer(), "tbctl-deadline-timer")
    config.pluginmanager.register(Engine(run), "tbctl-engine")


class Engine:
    """The run's hooks, on the run."""

    def __init__(self, run: Run):
        self.run = run
        self.results_file: Path | None = None
        self.exit_code: int | None = None
        self._log: logging.Handler | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not session.config.option.collectonly:
            self._log = logs.to_file(self.run.settings.artifacts / "run.log")  # the machines' lines and the engine's

    @pytest.hookimpl(trylast=True)  # after -k and the other selections: shards split what is left
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        part = self.run.settings.part
        if part is None:
            return
        ids = [i.nodeid for i in items]
        mine = set(shard.split(ids, part.total, part.by, self.run.settings.durations)[part.index - 1])
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in mine])
        items[:] = [i for i in items if i.nodeid in mine]
        self.run.shard_record = {"index": part.index, "total": part.total, "by": part.by,
                                 "plan": shard.plan_id(ids, part, self.run.settings.durations),
                                 "run": shard.run_id(os.environ), "of": len(ids), "tests": [i.nodeid for i in items]}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        attempts.begin(self.run, item)
        item.stash[HOST_BEFORE] = host.sample()
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        with deadline.Guard(item, self.run.deadline(item)):
            yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        rep: pytest.TestReport = (yield).get_result()
        timeline.phase(item, rep.when, call)
        v = results.verdict(item)
        died = self._qemu_deaths(item, call, rep) if rep.when != "call" and rep.failed else False
        if rep.when == "setup":
            v.kind = outcome.worst(v.kind, outcome.setup(rep.skipped, rep.failed, died))
        elif rep.when == "call":
            v.kind = outcome.worst(v.kind, self._judge_call(item, call, rep))
        else:
            v.kind = outcome.worst(v.kind, outcome.teardown(rep.failed, v.kind, died))
            self._finish(item, rep)
        results.add_phase(self.run, item, rep, call)
        if rep.when == "call":
            self._known(item, rep)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        artifacts.collect(item)  # before the fixtures shut a fresh machine down
        yield

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if session.config.option.collectonly:
            return
        self.results_file = self.run.settings.results_file
        self.exit_code = results.write(self.run, int(exitstatus), self.results_file)
        if self._log is not None:
            logs.stop(self._log)

    def pytest_report_header(self, config: pytest.Config) -> str:
        return f"tbctl {__version__}: {qemu_binary.current().describe()}"

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not (self.run.results or self.run.shard_record):
            return
        terminalreporter.section("tbctl summary")
        for line in results.summary(self.run):
            terminalreporter.write_line(line)
        if self.results_file is not None:
            terminalreporter.write_line(f"artifacts: {self.run.settings.artifacts}")
            terminalreporter.write_line(f"results:   {self.results_file} (exit code {self.exit_code})")

    # -- the engine's own steps, called by the hooks -----------------------------------------------

    def _judge_call(self, item: pytest.Item, call: pytest.CallInfo[None], rep: pytest.TestReport) -> str:
        """The body's outcome: its crashes, its deadline (with the diagnosis and what was killed),
        its own verdict; a passing body that crashed something, or caught its deadline, fails."""
        v = results.verdict(item)
        found = findings.of(item) if not rep.skipped else []
        if rep.failed and not any(f.fatal for _, f in found):  # a failure nothing explains: is the guest there?
            found += findings.unresponsive(item)
        exc = call.excinfo.value if call.excinfo else None
        fatal = {m for m, f in found if f.fatal}
        fired = item.stash.get(deadline.FIRED, None)
        if fired and not isinstance(exc, deadline.TestDeadline):  # the body caught it: it still ended the test
            v.caught = True
            rep.outcome, rep.longrepr = "failed", f"{fired} (and the test body caught it)"
        timed_out = outcome.timed_out(bool(fired), isinstance(exc, DeadlineError), bool(fatal))
        if timed_out:
            self._diagnose(item, rep, bool(fired))
        crashed = outcome.crash(any(findings.qemu_died(f) for _, f in found)) if found else None
        if crashed:
            titles = list(dict.fromkeys(f.title for _, f in found))
            v.crashes = f"{crashed}: " + "; ".join(titles)
            rep.sections.append((crashed, "\n\n".join(f"{f.title}\n{f.evidence}" for _, f in found)))
            if rep.passed:  # a passing test that crashed something did not pass
                rep.outcome, rep.longrepr = "failed", v.crashes
            for m in fatal if not self.run.settings.spec.keep_vm else ():  # --keep-vm: kept as it died, for the user
                m.shutdown(graceful=False)  # a panicked guest answers nothing: do not wait on it
        return outcome.call(rep.passed, rep.skipped, timed_out, crashed)

    def _qemu_deaths(self, item: pytest.Item, call: pytest.CallInfo[None], rep: pytest.TestReport) -> bool:
        """A fixture failed: whether QEMU died on its own under it (recorded as the test's crash)."""
        titles = findings.qemu_deaths(item, call.excinfo.value if call.excinfo else None)
        if titles:
            v = results.verdict(item)
            v.crashes = v.crashes or "qemu crashed: " + "; ".join(titles)
            rep.sections.append(("qemu crashed", "\n".join(titles)))
        return bool(titles)

    def _keep(self, item: pytest.Item, entry: dict[str, Any]) -> None:
        """--keep-vm: a failing test's machines outlive the run, registered as `tbctl up`'s, and
        are not handed to the next test."""
        for s in slices.of(item):
            m = s.machine
            if m.qemu_alive() and m.name not in self.run.kept:
                m.keep()
                self.run.kept[m.name] = item.nodeid
                self.run.taint(m.name, "kept (--keep-vm)")
                entry.setdefault("kept", []).append(m.name)

    def _known(self, item: pytest.Item, rep: pytest.TestReport) -> None:
        """A body failure on the known-failure list: kept, with its reason, and shown to pytest
        (terminal, JUnit) as an expected failure."""
        v, e = results.verdict(item), results.entry(self.run, item)
        if v.kind not in outcome.KNOWABLE:
            return
        test_id = item.stash.get(substeps.ALIAS, f"{Path(str(item.fspath)).stem}::{item.name}")
        v.known = self._known_rule(test_id, {**e, "outcome": v.kind})
        if v.known is not None:
            rep.outcome, rep.wasxfail = "skipped", f"known failure: {v.known['reason']}"

    def _known_rule(self, test_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """The known-failure rule a failed test (or step) matches, as results.json keeps it."""
        rule = self.run.settings.known.match(test_id, repro.signature(record), self.run.versions())
        return rule.record(record["outcome"]) if rule is not None else None

    def _diagnose(self, item: pytest.Item, rep: pytest.TestReport, fired: bool) -> None:
        """First the diagnosis, while everything that hung is still there; then kill what hung."""
        diagnosis = deadline.diagnose(item)
        if diagnosis:
            rep.sections.append(("diagnosis", diagnosis))
            results.verdict(item).diagnosis = diagnosis
        if fired:
            rep.sections.append(("deadline", "\n".join(deadline.kill_hung(item)) or "nothing left to kill"))

    def _finish(self, item: pytest.Item, rep: pytest.TestReport) -> None:
        """The test's final outcome: recorded, given to JUnit, and its machines discarded if need be."""
        v = results.verdict(item)
        final = outcome.final(v.kind)
        entry = results.entry(self.run, item)
        for s in slices.of(item):
            m = s.machine
            qmp = m.qmp_channel
            why = outcome.discard(m.crashed or (m.returncode is not None and not m.stopped),
                                  qmp.unplug_lost if qmp is not None else None, final) or self.run.tainted.get(m.name)
            if why:
                self.run.taint(m.name, why)
                entry.setdefault("discarded", {})[m.name] = why
        if self.run.settings.spec.keep_vm and final in outcome.KNOWABLE:
            self._keep(item, entry)
        shown = outcome.known(final, v.known["outcome"] if v.known else None)
        if shown != final:
            entry["known"] = v.known
        rep.user_properties.append(("outcome", shown))
        entry["outcome"] = shown
        if HOST_BEFORE in item.stash:
            entry["host"] = host.conditions(item.stash[HOST_BEFORE], host.sample())
        entry["artifacts"] = str(slices.test_dir(item)) if slices.has_dir(item) else None
        entry["events"] = timeline.events(item)
        if shown not in ("passed", "skipped"):
            entry["excerpt"] = timeline.excerpt(item)
        for step in substeps.emit(item, shown, entry, self._known_rule):
            self.run.results[step["nodeid"]] = step
        log.info(f"{item.nodeid}: {shown}" + (f"; discarded {entry['discarded']}" if "discarded" in entry else ""))
