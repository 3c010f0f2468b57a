"""Shared fixtures. VM tests (marker `vm`) boot the real guest under QEMU; `-m "not vm"` runs the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator import image, paths
from orchestrator.cli import main
from orchestrator.image import shell as image_shell
from orchestrator.results import shard
from orchestrator.vm import accel, qemu_binary, registry

STANDIN = Path(__file__).resolve().parent / "spdk_standin"
ENGINE_SUITES = Path(__file__).resolve().parent / "engine_suites"
Tbctl = Callable[..., subprocess.CompletedProcess[str]]


def tbctl(tmp_path: Path, *args: str, timeout: float = 1200,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The tbctl CLI as a user runs it, in `tmp_path`, with its artifacts there (and `env` added)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TBCTL_ARTIFACTS": str(tmp_path / "art"), **(env or {})},
                          cwd=tmp_path)


@pytest.fixture
def tbctl_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Tbctl:
    """`tbctl` for input that must be refused before anything starts: the CLI's own main() in
    this process, in `tmp_path`, its exit code and output as a process would give them, without
    a Python start (~0.5 s) per case. `tbctl()` is for everything that runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TBCTL_ARTIFACTS", str(tmp_path / "art"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        term = signal.getsignal(signal.SIGTERM)
        try:
            rc: object = main(list(args))
        except SystemExit as e:  # argparse's refusals and --help
            rc = e.code
        finally:
            signal.signal(signal.SIGTERM, term)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["tbctl", *args], rc if isinstance(rc, int) else 1, out.out, out.err)
    return run


def browser(page: Path, tmp_path: Path, *args: str) -> str:
    """`page` opened in Debian's chromium, headless (its profile in tmp_path): the DOM it built."""
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chr'}",
                        *args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(autouse=True)
def private_state(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own VM registry, so tests never see (or reap) each other's or a user's VMs;
    a demo suite's test, run inside a test's `tbctl run`, keeps that run's registry."""
    if ENGINE_SUITES in Path(str(request.node.fspath)).parents:
        return paths.state_dir()
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("TBCTL_STATE", str(state))
    for var in ("TBCTL_SHARD", *(v for vs in shard.SCHEDULERS for v in vs[:2])):  # a CI job's own shard
        monkeypatch.delenv(var, raising=False)
    return state


@pytest.fixture(scope="session")
def guest_image() -> image.Image:
    return image.ensure(image.DEFAULT_IMAGE)


@pytest.fixture(scope="session")
def standin() -> Path:
    """The SPDK stand-in tree, built as a user builds a real one: its own make, in the SPDK-ready
    image's userland (so it links against what the guest has)."""
    img = image.ensure(image.SPDK_IMAGE)
    rc = image_shell.run(img, [STANDIN], ["make", "-s"], timeout=300)
    assert rc == 0, f"building the SPDK stand-in in {img.dir.name}'s userland failed (exit {rc})"
    return STANDIN


@pytest.fixture(scope="session")
def backports(tmp_path_factory: pytest.TempPathFactory) -> qemu_binary.Qemu:
    """Debian's backports QEMU (10.0 on a bookworm host), installed by tbctl itself: the second QEMU
    the suites run on."""
    r = tbctl(tmp_path_factory.mktemp("install"), "qemu", "install", "backports", timeout=900)
    if "carries no qemu-system-x86" in r.stderr:  # a release whose backports have no newer QEMU (yet)
        pytest.skip(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr
    q = qemu_binary.probe(Path(r.stdout.strip().splitlines()[-1]), "--qemu")
    host = qemu_binary.select()
    assert q.path != host.path and q.version != host.version, (q, host)
    listed = tbctl(tmp_path_factory.mktemp("list"), "qemu", "list").stdout.splitlines()
    assert f"PATH       {host.version_text:8} {host.path}  (host)" in listed
    assert any(ln.startswith(f"backports  {q.version_text:8} {q.path}  (Debian ") for ln in listed), listed
    return q


@pytest.fixture(scope="session")
def accelerator(guest_image: image.Image) -> str:
    return accel.resolve("auto", guest_image)


def qemu_pids(state: Path) -> set[int]:
    """Live QEMUs of this test's own state directory (their sockets live there): never count,
    or kill, a QEMU that other work on the same host started."""
    out = subprocess.run(["pgrep", "-x", "qemu-system-x86"], capture_output=True, text=True).stdout
    mine = set()
    for pid in map(int, out.split()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        # A zombie has exited; it only waits for a parent (PID 1 after `tbctl up` exits) to reap it.
        if str(state) in cmdline and registry.start_time(pid) is not None:
            mine.add(pid)
    return mine


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest, private_state: Path) -> Iterator[None]:
    """A VM test must leave no QEMU process, run directory or registry record behind."""
    before = qemu_pids(private_state)
    yield
    if request.node.get_closest_marker("vm") is None:
        return
    leaked = qemu_pids(private_state) - before
    for pid in leaked:  # don't let one leak break every later test, but fail this one
        registry.kill(pid, registry.start_time(pid))
    assert not leaked, f"QEMU processes leaked: {leaked}"
    vms = private_state / "vms"
    assert not vms.exists() or not any(vms.iterdir()), f"run directories left: {list(vms.iterdir())}"
