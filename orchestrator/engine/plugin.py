"""The suite engine, as a pytest plugin: suites are pytest modules; this hands them booted
machines and tells outcomes apart.

Fixtures: `machine` (booted once per module, re-booted if a test left it dead), `fresh_machine`
(a VM of the test's own), `ssh`, `qmp`, `hotplug` (fault injector), `artifacts` (per-test dir),
`bed` (session settings: topology, image, accelerator, SPDK tree, seed).

Every test body runs under a deadline (module `TIMEOUT`, `--tb-timeout`, times the accelerator's
scale). When it fires, the guest commands in flight are killed (their whole process group), or
the VM if the guest no longer answers, and the outcome says what hung. Outcomes: passed, failed,
timed out, guest crashed, qemu crashed, infrastructure error, skipped; each becomes a JUnit
property `outcome`, and the run's results.json holds them with the run's metadata. A machine
whose test did not end passed, failed or skipped (or that lost a device_del) is discarded.
"""

from __future__ import annotations

import json
import random
import re
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from orchestrator import __version__, faults, image
from orchestrator.vm import accel, qemu_binary, snapshot
from orchestrator.report import crash
from orchestrator.spdk import tree as spdk_tree
from orchestrator.config import topology
from orchestrator.errors import OUTCOMES, DeadlineError, TbctlError
from orchestrator.faults import Hotplug
from orchestrator.vm.machine import Machine
from orchestrator.vm.qmp import QMP
from orchestrator.guest.ssh import SSH

DEFAULT_TIMEOUT = 120.0
ACCEL_SCALE = {"kvm": 1.0, "tcg": 3.0}  # suite deadlines are written for KVM
# Outcomes after which a machine's state is unknown: it is discarded, never handed to the next test.
DISCARD = ("timed out", "guest crashed", "qemu crashed", "infrastructure error")
EXIT_PASSED, EXIT_FAILED, EXIT_INFRA = 0, 1, 2


class TestDeadline(BaseException):
    """The per-test deadline fired. Not an Exception, nor a DeadlineError: a test body's own
    `except Exception` or `pytest.raises(DeadlineError)` cannot swallow it, and should one catch
    it anyway it fires again every REFIRE seconds and the test still ends `timed out`."""

    __test__ = False  # not a pytest test class


REFIRE = 5.0


class GuestCrashed(TbctlError):
    """A fatal crash report (panic, oops, GUEST_PANICKED, QEMU dying) ended the test before its deadline."""


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("tbctl")
    g.addoption("--tb-topology", metavar="FILE", help="machine/NVMe topology (TOML); default: built-in")
    g.addoption("--tb-accel", choices=topology.ACCELS, help="override the topology's accelerator")
    g.addoption("--tb-qemu", metavar="PATH", help=f"QEMU binary (default: ${qemu_binary.ENV}, the topology's, PATH's)")
    g.addoption("--tb-timeout", type=float, metavar="S", help="per-test deadline, overriding the suites' own")
    g.addoption("--tb-artifacts", metavar="DIR", help="where each test's artifacts go")
    g.addoption("--tb-results", metavar="FILE", help="results.json path (default: in the artifacts dir)")
    g.addoption("--tb-spdk-dir", metavar="DIR", help="SPDK tree (built) shared read-only into the guest")
    g.addoption("--tb-image", metavar="RECIPE", help="guest image recipe (default: the topology's, else "
                                                    "the SPDK-ready one with an SPDK tree, else the default)")
    g.addoption("--tb-keep-vm", action="store_true", help="leave module VMs running after the run")
    g.addoption("--tb-seed", type=int, help="the run's seed: fault timing; recorded in results.json (default: random)")
    g.addoption("--tb-jitter", type=float, default=0.3, metavar="S",
                help="hotplug faults fire after a seeded delay in [0, S) s (default 0.3; 0: at once)")
    g.addoption("--tb-snapshot", action="store_true",
                help="start machines from a saved ready guest (hot-pluggable controllers only; else cold boot)")


@dataclass
class Bed:
    """Session-wide settings and the run's results."""

    config: pytest.Config
    topology: topology.Topology
    artifacts: Path
    seed: int
    spdk_dir: Path | None
    keep_vm: bool
    timeout_override: float | None
    jitter: float  # seconds: each hotplug fault fires after a seeded delay below this
    snapshot: bool  # start machines from a saved ready guest where the topology allows
    start: str = "cold boot"  # how machines started, for results.json
    _image: image.Image | None = None
    _accel: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # Machines a test left in an unknown state (an infrastructure error: its set-up or the
    # teardown that restores the machine failed): never handed to the next test.
    tainted: set[str] = field(default_factory=set)

    @property
    def image(self) -> image.Image:
        if self._image is None:
            self._image = image.ensure(image.choose(self.config.getoption("tb_image"), self.topology.image,
                                                    self.spdk_dir is not None))
        return self._image

    @property
    def accel(self) -> str:
        if self._accel is None:
            self._accel = accel.resolve(self.config.getoption("tb_accel") or self.topology.accel, self.image)
        return self._accel

    def deadline(self, item: pytest.Item) -> float:
        if self.timeout_override:
            return self.timeout_override
        marker = item.get_closest_marker("tb_timeout")
        base = marker.args[0] if marker else getattr(item.module, "TIMEOUT", DEFAULT_TIMEOUT)
        return base * ACCEL_SCALE.get(self._accel or "tcg", 1.0)

    def rng(self, item: pytest.Item) -> random.Random:
        """This test's random source: the run's seed and the test's id, so `--seed` replays it."""
        return random.Random(f"{self.seed}/{item.nodeid.rsplit('/', 1)[-1]}")

    def spdk_tree(self, rel: str) -> spdk_tree.Tree:
        """The SPDK tree, which must have app `rel`: skips the test without a tree, fails it when
        the tree lacks the app."""
        if self.spdk_dir is None:
            pytest.skip("needs an SPDK tree: tbctl run SUITE --spdk-dir DIR")
        if not (self.spdk_dir / rel).is_file():
            pytest.fail(f"--spdk-dir {self.spdk_dir}: no {rel} (is SPDK built?)")
        return spdk_tree.Tree(self.spdk_dir)

    def boot(self, artifacts: Path) -> Machine:
        """A ready machine: restored from a saved guest with --tb-snapshot when the topology
        allows it, booted cold otherwise (and `start` says why)."""
        shares = {"spdk": self.spdk_dir} if self.spdk_dir else {}
        saved = None
        if self.snapshot:
            reason = snapshot.unsupported(self.topology)
            if reason:
                self.start = f"cold boot: {reason}"
            else:
                saved = snapshot.ensure(self.topology, self.image, self.accel, shares)
                self.start = f"snapshot {saved.dir.name}"
        return Machine(self.topology, self.image, artifacts, accel=self.accel, shares=shares, persistent=False,
                       restore=saved).launch()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tb_timeout(seconds): this test's deadline, before accelerator scaling")
    path = config.getoption("tb_topology")
    spdk = config.getoption("tb_spdk_dir")
    try:
        topo = topology.load(path) if path else topology.default()
        topology.check_qemu(topo, qemu_binary.use(qemu_binary.select(config.getoption("tb_qemu"), topo.qemu,
                                                                     topo.source)))
    except TbctlError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[_BED] = Bed(
        config=config, topology=topo,
        artifacts=Path(config.getoption("tb_artifacts") or Path.cwd() / "tbctl-artifacts" /
                       time.strftime("run-%Y%m%d-%H%M%S")).resolve(),
        seed=config.getoption("tb_seed") if config.getoption("tb_seed") is not None else random.randrange(1 << 31),
        spdk_dir=Path(spdk).resolve() if spdk else None, keep_vm=config.getoption("tb_keep_vm"),
        timeout_override=config.getoption("tb_timeout"), jitter=config.getoption("tb_jitter"),
        snapshot=config.getoption("tb_snapshot"))


_BED = pytest.StashKey[Bed]()
_MACHINES = pytest.StashKey[list]()
_KIND = pytest.StashKey[str]()
_DIR = pytest.StashKey[Path]()
_DIAGNOSIS = pytest.StashKey[str]()
_CRASHES = pytest.StashKey[str]()  # "guest crashed: TITLE; ..." or "qemu crashed: ..."
_FIRED = pytest.StashKey[str]()  # the per-test deadline's message, once it fired


def _safe(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


@pytest.fixture(scope="session")
def bed(request: pytest.FixtureRequest) -> Bed:
    return request.config.stash[_BED]


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, bed: Bed) -> Path:
    return _test_dir(request.node, bed)


def _test_dir(item: pytest.Item, bed: Bed) -> Path:
    if _DIR not in item.stash:
        mod = Path(str(item.fspath)).stem
        item.stash[_DIR] = bed.artifacts / mod / _safe(item.nodeid)
        item.stash[_DIR].mkdir(parents=True, exist_ok=True)
    return item.stash[_DIR]


class _ModuleVM:
    """The module's machine: booted on first use, booted again if a test left it dead or in a
    state nobody could restore (see `Bed.tainted`)."""

    def __init__(self, bed: Bed, name: str):
        self.bed, self.name, self.machine, self.boots = bed, name, None, 0

    def get(self) -> Machine:
        m = self.machine
        if m is None or m.name in self.bed.tainted or not m.qemu_alive() or not m.ssh_alive():
            if m is not None:
                m.shutdown(graceful=False)
            self.boots += 1
            self.machine = self.bed.boot(self.bed.artifacts / self.name / f"vm-{self.boots}")
        assert self.machine is not None
        return self.machine

    def close(self) -> None:
        if self.machine is not None and not self.bed.keep_vm:
            # a restored guest's disk is thrown away: no need to let it power off cleanly
            self.machine.shutdown(graceful=self.machine.restore is None)


@pytest.fixture(scope="module")
def _module_vm(request: pytest.FixtureRequest, bed: Bed) -> Iterator[_ModuleVM]:
    holder = _ModuleVM(bed, Path(str(request.module.__file__)).stem)
    yield holder
    holder.close()


def _use(item: pytest.Item, m: Machine) -> Machine:
    """Remember where each log of `m` stood when the test got it, to cut the test's slice later."""
    item.stash.setdefault(_MACHINES, []).append(
        (m, m.console.mark() if m.console else 0, m.qmp.mark(), _size(m.artifacts / "commands.log")))
    return m


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


@pytest.fixture
def machine(request: pytest.FixtureRequest, _module_vm: _ModuleVM) -> Machine:
    return _use(request.node, _module_vm.get())


@pytest.fixture
def fresh_machine(request: pytest.FixtureRequest, bed: Bed, artifacts: Path) -> Iterator[Machine]:
    m = bed.boot(artifacts / "vm")
    try:
        yield _use(request.node, m)
    finally:
        m.shutdown(graceful=m.restore is None)


@pytest.fixture
def ssh(machine: Machine) -> SSH:
    return machine.ssh


@pytest.fixture
def qmp(machine: Machine) -> QMP:
    return machine.qmp


@pytest.fixture
def hotplug(request: pytest.FixtureRequest, machine: Machine, bed: Bed) -> Iterator[Hotplug]:
    h = Hotplug(machine, bed.rng(request.node), bed.jitter)
    yield h
    if h.schedule:
        _entry(request.node)["schedule"] = h.schedule


# -- deadlines ------------------------------------------------------------------------------------

def _in_flight(item: pytest.Item) -> str:
    cmds = [p.label for m, *_ in item.stash.get(_MACHINES, []) if m._ssh for p in list(m._ssh.active)]
    return "guest command(s) in flight: " + "; ".join(c[:200] for c in cmds) if cmds else "no guest command in flight"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    bed = item.config.stash[_BED]
    limit = bed.deadline(item)

    def fire(signum: int, frame: Any) -> None:
        item.stash[_FIRED] = f"test deadline of {limit:g} s fired; {_in_flight(item)}"
        raise TestDeadline(item.stash[_FIRED])

    crashed: list[crash.Finding] = []
    armed = threading.Lock()
    main = threading.main_thread().ident

    def on_fatal(finding: crash.Finding) -> None:  # from a watcher thread
        with armed:
            if not crashed and watches:
                crashed.append(finding)
                signal.pthread_kill(main, signal.SIGUSR1)  # type: ignore[arg-type]

    def end(signum: int, frame: Any) -> None:
        raise GuestCrashed(crashed[0].title if crashed else "guest crashed")

    previous = signal.signal(signal.SIGALRM, fire), signal.signal(signal.SIGUSR1, end)
    watches: list[crash.CrashWatch] = []
    for m, console_mark, qmp_mark, _ in item.stash.get(_MACHINES, []):
        if m.console is not None:
            watches.append(crash.CrashWatch(m.console, m._qmp, console_mark, qmp_mark, on_fatal, m.name,
                                            qemu_died=lambda m=m: not m.stopped and not m.qemu_alive()))
            watches[-1].start()  # listed first: on_fatal ignores a watcher it does not know
    signal.setitimer(signal.ITIMER_REAL, limit, REFIRE)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with armed:
            stopping, watches[:] = list(watches), []
        for w in stopping:
            w.stop()
        signal.signal(signal.SIGALRM, previous[0])
        signal.signal(signal.SIGUSR1, previous[1])


def _kill_hung(item: pytest.Item) -> list[str]:
    """After a deadline: kill the guest commands still running, or the VM if the guest is gone."""
    done = []
    for m, *_ in item.stash.get(_MACHINES, []):
        for proc in list(m._ssh.active) if m._ssh else []:
            try:
                proc.kill()
                done.append(f"killed guest command: {proc.label[:200]}")
            except Exception as e:  # the guest no longer answers: kill the VM itself
                m.shutdown(graceful=False)
                done.append(f"guest did not answer ({e}); killed VM {m.name}")
                break
    return done


def _diagnose(item: pytest.Item) -> str:
    """Why a wait may never have ended, from QEMU's side of each controller: fatal status
    (CSTS.CFS, with QEMU's NVMe error trace lines) and its admin queue (what was fetched and
    completed last, what waits at the head), read from the host through qtest."""
    found = []
    for m, *_ in item.stash.get(_MACHINES, []):
        if m._qmp is not None and m._qmp.unplug_lost and m.qemu_alive():
            bt = m.threads_backtrace()
            found.append(f"{m.name}: {m._qmp.unplug_lost}; the guest's blocked tasks: {_blocked_tasks(m)}"
                         + (f"; QEMU's threads: {bt}" if bt else ""))
        if not m.topology.qtest or not m.qemu_alive():
            continue
        for c in m.topology.controllers:
            try:
                fatal = faults.controller_fatal(m, c.id, "host")
            except TbctlError:
                continue  # not on the bus, or BAR0 unmapped: nothing to read
            if fatal:
                stderr = (m.artifacts / "qemu.stderr").read_text(errors="replace").splitlines()
                trace = [ln for ln in stderr if ln.startswith("pci_nvme_err")][-4:]
                found.append(f"{m.name} {c.id}: controller fatal status (CSTS.CFS=1)"
                             + (f"; QEMU trace: {' | '.join(trace)}" if trace else ""))
            try:
                found.append(f"{m.name} {c.id}: {faults.admin_queue(m, c.id).describe()}")
            except TbctlError as e:
                found.append(f"{m.name} {c.id}: admin queue not read: {e}")
    return "\n".join(found)


def _blocked_tasks(m: Machine) -> str:
    """The guest's tasks in uninterruptible sleep with their innermost non-generic frame, from
    sysrq-w (the whole dump goes to the kernel log, hence the console log)."""
    try:
        return crash.blocked_tasks(m.ssh.run("echo w > /proc/sysrq-trigger; sleep 1; dmesg", timeout=20).stdout)
    except TbctlError as e:
        return f"not read ({e})"


# -- outcomes -------------------------------------------------------------------------------------

def _crashes(item: pytest.Item) -> list[tuple[Machine, crash.Finding]]:
    """Every crash report of this test's slice of each machine's life: the kernel's on the
    console, GUEST_PANICKED, QEMU dying, apps' reports in the guest commands' output and their
    core dumps (each with gdb's backtrace in the artifacts)."""
    found: list[tuple[Machine, crash.Finding]] = []
    for m, console_mark, qmp_mark, cmd_mark in item.stash.get(_MACHINES, []):
        mine: list[crash.Finding] = []
        m.settle()
        if m.console is not None:
            mine += crash.kernel_findings(m.console.text[console_mark:])
        if m._qmp is not None:
            if any(f.fatal for f in mine) and m.qemu_alive():
                _await_pvpanic(m, qmp_mark)
            mine += crash.qmp_findings(m._qmp.events(qmp_mark))
        if not m.stopped and not m.qemu_alive():
            mine += m.qemu_crash()
        app = _app_findings(m.artifacts / "commands.log", cmd_mark)
        if not any(f.fatal for f in mine) and m.qemu_alive() and m._ssh is not None:
            app += _core_findings(m, _test_dir(item, item.config.stash[_BED]))
        found += [(m, f) for f in mine + crash.one_per_app_crash(app)]
    return found


PVPANIC_WAIT = 3.0  # seconds: the kernel tells pvpanic only after it printed its panic


def _await_pvpanic(m: Machine, qmp_mark: int) -> None:
    """A panicking kernel notifies pvpanic after its report: wait for GUEST_PANICKED a moment,
    so the report is whole however early the console watch ended the test."""
    assert m._qmp is not None
    try:
        m._qmp.wait_event("GUEST_PANICKED", timeout=PVPANIC_WAIT, after=qmp_mark)
    except DeadlineError:
        pass  # no pvpanic device, or the kernel died before reaching it


_COMMAND = re.compile(r"^\$ (.*)\n# exit (-?\d+) in ", re.M)


def _since(log: Path, mark: int) -> bytes:
    """What `log` got from offset `mark` on (a test's slice of a machine's log)."""
    if not log.exists():
        return b""
    with open(log, "rb") as f:
        f.seek(mark)
        return f.read()


def _app_findings(log: Path, mark: int) -> list[crash.Finding]:
    text = _since(log, mark).decode(errors="replace")
    exits = [crash.exit_finding(int(m[2]), m[1]) for m in _COMMAND.finditer(text)]
    return crash.app_findings(text) + [f for f in exits if f]


def _core_findings(m: Machine, artifacts: Path) -> list[crash.Finding]:
    """Cores the guest's core_pattern left: each gets gdb's `thread apply all bt` in the test's
    artifacts, and is then removed so the next test does not report it again."""
    try:
        names = m.ssh.run(f"ls {image.CORE_DIR}", timeout=15).stdout.split()
    except TbctlError:
        return []
    found = []
    for name in names:
        parts = name.split(".", 3)  # core.PID.SIGNAL.EXE
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        exe, core = parts[3].replace("!", "/"), f"{image.CORE_DIR}/{name}"
        q = shlex.quote
        try:
            bt = m.ssh.run(f"gdb -batch -nx -ex 'thread apply all bt' {q(exe)} {q(core)} 2>&1; rm -f {q(core)}",
                           timeout=120).stdout
        except TbctlError as e:
            bt = f"gdb failed: {e}"
        artifacts.mkdir(parents=True, exist_ok=True)
        (artifacts / f"core-{exe.rsplit('/', 1)[-1]}-{parts[1]}.bt.txt").write_text(bt)
        found.append(crash.core_finding(int(parts[2]), exe, bt))
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    kind = None
    if rep.when == "setup":
        kind = "skipped" if rep.skipped else "infrastructure error" if rep.failed else None
    elif rep.when == "call":
        kind = "passed" if rep.passed else "skipped" if rep.skipped else "failed"
        findings = _crashes(item) if not rep.skipped else []
        exc = call.excinfo.value if call.excinfo else None
        fatal = {m for m, f in findings if f.fatal}
        fired = item.stash.get(_FIRED, None)
        if fired and not isinstance(exc, TestDeadline):  # the body caught it: the deadline still ended the test
            rep.outcome, rep.longrepr = "failed", f"{fired} (and the test body caught it)"
        if (fired or isinstance(exc, DeadlineError)) and not fatal:
            kind = "timed out"
            diagnosis = _diagnose(item)  # first, while everything that hung is still there
            if diagnosis:
                rep.sections.append(("diagnosis", diagnosis))
                item.stash[_DIAGNOSIS] = diagnosis
            if fired:
                rep.sections.append(("deadline", "\n".join(_kill_hung(item)) or "nothing left to kill"))
        if findings:
            kind = "qemu crashed" if any(_qemu_died(f) for _, f in findings) else "guest crashed"
            titles = list(dict.fromkeys(f.title for _, f in findings))
            item.stash[_CRASHES] = f"{kind}: " + "; ".join(titles)
            rep.sections.append((kind, "\n\n".join(f"{f.title}\n{f.evidence}" for _, f in findings)))
            if rep.passed:  # a passing test that crashed something did not pass
                rep.outcome, rep.longrepr = "failed", item.stash[_CRASHES]
            for m in fatal:
                m.shutdown(graceful=False)  # a panicked guest answers nothing: do not wait on it
    elif rep.when == "teardown" and rep.failed:
        # A teardown that could not restore a machine whose QEMU or kernel died is the crash's
        # consequence, not another finding.
        crashed = item.stash.get(_KIND, "") in ("qemu crashed", "guest crashed")
        kind = None if crashed else "infrastructure error"
    if kind:
        prev = item.stash.get(_KIND, "passed")
        item.stash[_KIND] = kind if OUTCOMES.index(kind) >= OUTCOMES.index(prev) else prev
    if rep.when == "teardown":
        final = item.stash.get(_KIND, "infrastructure error")
        entry = _entry(item)
        for m, *_ in item.stash.get(_MACHINES, []):
            why = _discard_reason(m, final)
            if why:
                item.config.stash[_BED].tainted.add(m.name)
                entry.setdefault("discarded", {})[m.name] = why
        rep.user_properties.append(("outcome", final))
        entry["outcome"] = final
        entry["artifacts"] = str(item.stash[_DIR]) if _DIR in item.stash else None
    if rep.skipped and "message" not in _entry(item):
        _entry(item)["message"] = _skip_reason(rep)
    if rep.failed or rep.when == "call":
        entry = _entry(item)
        entry["duration"] = round(entry["duration"] + rep.duration, 3)
        if rep.failed and "message" not in entry:
            caught = rep.when == "call" and _FIRED in item.stash and not (call.excinfo and call.excinfo.type is TestDeadline)
            entry["message"] = str(rep.longrepr) if caught else _message(call)
            if _CRASHES in item.stash:
                crashed = item.stash[_CRASHES]
                ended = call.excinfo is not None and call.excinfo.type is GuestCrashed  # the watcher's early word
                entry["message"] = crashed if ended or not entry["message"] else crashed + "\n" + entry["message"]
            if _DIAGNOSIS in item.stash:
                entry["message"] += "\ndiagnosis: " + item.stash[_DIAGNOSIS]


def _qemu_died(f: crash.Finding) -> bool:
    """QEMU's own death, not a guest panic it reported (GUEST_PANICKED comes from QEMU too)."""
    return f.source == "qemu" and f.title.startswith("QEMU")


def _discard_reason(m: Machine, outcome: str) -> str | None:
    """Why machine `m` must not be handed to the next test, if it must not."""
    if m.crashed or (m.returncode is not None and not m.stopped):
        return "QEMU died"
    if m._qmp is not None and m._qmp.unplug_lost:
        return f"half-unplugged: {m._qmp.unplug_lost}"
    if outcome in DISCARD:
        return f"the test ended {outcome}: the machine's state is unknown"
    return None


def _entry(item: pytest.Item) -> dict[str, Any]:
    """This test's record in the run's results."""
    results = item.config.stash[_BED].results
    return results.setdefault(item.nodeid, {"nodeid": item.nodeid, "duration": 0.0})


def _skip_reason(rep: pytest.TestReport) -> str:
    """pytest keeps a skip's reason as (file, line, "Skipped: why")."""
    if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
        return str(rep.longrepr[2]).removeprefix("Skipped: ")
    return str(rep.longrepr or "skipped")


def _message(call: pytest.CallInfo[None]) -> str:
    if call.excinfo is None:
        return ""
    return f"{call.excinfo.typename}: {call.excinfo.value}"[:4000]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    _collect(item)  # before the fixtures shut a fresh machine down
    yield


def _collect(item: pytest.Item) -> None:
    """Every test, passed or not, leaves its slice of console, QMP events and guest commands,
    plus the guest's dmesg."""
    machines = item.stash.get(_MACHINES, [])
    if not machines:
        return
    d = _test_dir(item, item.config.stash[_BED])
    for i, (m, console_mark, qmp_mark, cmd_mark) in enumerate(machines):
        sfx = "" if len(machines) == 1 else f"-{i}"
        if m.console is not None:
            (d / f"console{sfx}.log").write_text(m.console.text[console_mark:])
        if m._qmp is not None:
            (d / f"qmp-events{sfx}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in m._qmp.events(qmp_mark)))
        if (m.artifacts / "commands.log").exists():
            (d / f"commands{sfx}.log").write_bytes(_since(m.artifacts / "commands.log", cmd_mark))
        (d / f"vm{sfx}.txt").write_text(f"{m.name}: full logs in {m.artifacts}\n")
        try:
            if not m.qemu_alive() or m._ssh is None:
                raise TbctlError("the VM was already shut down or killed (console.log has what it printed)")
            (d / f"dmesg{sfx}.txt").write_text(m._ssh.run("dmesg", timeout=15).stdout)
        except TbctlError as e:
            (d / f"dmesg{sfx}.txt").write_text(f"dmesg unavailable: {e}\n")


# -- run results ----------------------------------------------------------------------------------

def exit_code(results: dict[str, dict[str, Any]], session_status: int) -> int:
    """0 all passed, 1 a test failed/timed out/crashed, 2 infrastructure error or incomplete."""
    kinds = {r.get("outcome", "infrastructure error") for r in results.values()}
    if "infrastructure error" in kinds or session_status not in (0, 1) or not results:
        return EXIT_INFRA
    if kinds & {"failed", "timed out", "guest crashed", "qemu crashed"}:
        return EXIT_FAILED
    return EXIT_PASSED


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bed = session.config.stash.get(_BED, None)
    if bed is None or session.config.option.collectonly:
        return
    code = exit_code(bed.results, int(exitstatus))
    img = bed._image.manifest if bed._image else {}
    doc = {
        "tbctl": __version__, "qemu": qemu_binary.current().record(), "image": {k: img.get(k) for k in ("name", "digest", "kernel")},
        "topology": bed.topology.source, "accel": bed._accel, "seed": bed.seed, "jitter": bed.jitter, "start": bed.start,
        "spdk_dir": str(bed.spdk_dir) if bed.spdk_dir else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(bed.started)),
        "duration": round(time.time() - bed.started, 2), "exit_code": code,
        "counts": {k: sum(1 for r in bed.results.values() if r.get("outcome") == k) for k in OUTCOMES},
        "tests": list(bed.results.values()), "artifacts": str(bed.artifacts),
    }
    path = Path(session.config.getoption("tb_results") or bed.artifacts / "results.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    session.config.stash[_RESULTS] = (path, code)


_RESULTS = pytest.StashKey[tuple]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"tbctl {__version__}: {qemu_binary.current().describe()}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    bed = config.stash.get(_BED, None)
    if bed is None or not bed.results:
        return
    tr = terminalreporter
    tr.section("tbctl summary")
    tr.write_line(qemu_binary.current().describe())
    for r in bed.results.values():
        tr.write_line(f"{r.get('outcome', '?'):21} {r['duration']:7.1f} s  {r['nodeid']}")
        if r.get("outcome") != "passed" and r.get("message"):
            tr.write_line(f"{'':21} {r['message'].splitlines()[0][:300]}")
    if _RESULTS in config.stash:
        path, code = config.stash[_RESULTS]
        tr.write_line(f"artifacts: {bed.artifacts}")
        tr.write_line(f"results:   {path} (exit code {code})")

